"""Fashion-MNIST one-hidden-layer MLP; runs offline here from the Debian IDX files.

Sparse-wide by default: width 512 at the weight count of the dense width-64 net.
Dense narrow comparison: --config.model.width=64 --config.model.base_width=0
"""

from configs import default


def get_config():
    config = default.get_config()
    config.dataset.name = "fashion_mnist"
    config.dataset.augment = "none"
    config.dataset.normalization = "channel"
    config.model.name = "mlp"
    config.model.width = 512
    config.model.base_width = 64
    config.model.parametrization = "standard"
    config.optimizer.lr = 0.05
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 0.0
    config.optimizer.schedule = "cosine"
    config.train.num_epochs = 10
    config.train.batch_size = 100
    config.train.eval_batch_size = 1000
    config.train.log_every_steps = 200
    config.train.checkpoint_every_steps = 600
    return config
