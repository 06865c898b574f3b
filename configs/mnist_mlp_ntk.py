"""MNIST MLP in NTK parametrization (paper Fig. 8).

f(x) = V relu(U x / sqrt(784)) / sqrt(n), no biases; 2048 training samples; per-pixel
normalization; batch 256; 300 epochs; weight count of width 8 (6352 weights) with the last
layer kept dense. The learning rate is the paper's tuned value for the (width, dense|sparse)
pair unless --config.optimizer.lr is given:
  python main.py --config=configs/mnist_mlp_ntk.py --workdir=/tmp/ntk128 \
      --config.model.width=128 --config.model.base_width=8
"""

from configs import default

# Paper Fig. 8, per-width tuned learning rates.
LR_DENSE = {8: 5.0, 32: 80.0, 128: 173.0, 216: 228.0, 328: 306.0, 512: 445.0, 635: 460.0}
LR_SPARSE = {32: 136.0, 128: 260.0, 216: 361.0, 328: 491.0, 512: 736.0, 635: 875.0}


def get_config():
    config = default.get_config()
    config.dataset.name = "mnist"
    config.dataset.augment = "none"
    config.dataset.normalization = "pixel"
    config.dataset.train_subset = 2048
    config.model.name = "mlp"
    config.model.width = 8
    config.model.parametrization = "ntk"
    config.model.use_bias = False
    config.model.init_distribution = "normal"
    config.sparsity.dense_layers = ("cl",)  # the last layer stays dense
    config.optimizer.lr = None  # resolved from the tables below by width and sparsity
    config.optimizer.lr_table_dense = dict((str(k), v) for k, v in LR_DENSE.items())
    config.optimizer.lr_table_sparse = dict((str(k), v) for k, v in LR_SPARSE.items())
    # The baseline's MLP/main.py uses plain torch.optim.SGD(params, lr): no momentum
    # (the paper's tuned NTK learning rates diverge with momentum 0.9).
    config.optimizer.momentum = 0.0
    config.optimizer.weight_decay = 0.0
    config.optimizer.schedule = "constant"
    config.train.num_epochs = 300
    config.train.batch_size = 256
    config.train.eval_batch_size = 1000
    config.train.log_every_steps = 40
    config.train.checkpoint_every_steps = 800
    return config
