"""Fashion-MNIST, small CIFAR-style ResNet-18; the offline stand-in for the CIFAR sweeps.

28x28x1 inputs, random crop (pad 4) + flip, multistep schedule compressed to num_epochs.
Width 16 sparse at the weight count of width 8 by default.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.dataset.name = "fashion_mnist"
    config.dataset.augment = "cifar_crop_flip"
    config.dataset.normalization = "channel"
    config.model.name = "resnet18"
    config.model.stem = "cifar"
    config.model.width = 16
    config.model.base_width = 8
    config.optimizer.lr = 0.1
    config.optimizer.weight_decay = 5e-4
    config.optimizer.schedule = "multistep"
    config.optimizer.milestones = (3, 5)
    config.train.num_epochs = 6
    config.train.batch_size = 128
    config.train.eval_batch_size = 1000
    config.train.log_every_steps = 100
    config.train.checkpoint_every_steps = 468
    return config
