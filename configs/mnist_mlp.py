"""MNIST one-hidden-layer MLP, standard parametrization (paper Fig. 5).

Weight count of the width-5 net (3970 weights), widths 5..640, SGD lr 0.1, batch 100, 300 epochs:
  python main.py --config=configs/mnist_mlp.py --workdir=/tmp/mlp640 \
      --config.model.width=640 --config.model.base_width=5
Use --config.model.activation=linear for the paper's linear contrast.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.dataset.name = "mnist"
    config.dataset.augment = "none"
    config.dataset.normalization = "channel"
    config.model.name = "mlp"
    config.model.width = 5
    config.model.parametrization = "standard"
    config.model.use_bias = True
    config.optimizer.lr = 0.1
    # The baseline's MLP/main.py uses plain torch.optim.SGD(params, lr): no momentum
    config.optimizer.momentum = 0.0
    config.optimizer.weight_decay = 0.0
    config.optimizer.schedule = "constant"
    config.train.num_epochs = 300
    config.train.batch_size = 100
    config.train.eval_batch_size = 1000
    config.train.checkpoint_every_steps = 600
    return config
