"""SVHN (TFDS svhn_cropped), ResNet-18: CIFAR settings, random crop without flip (paper Sec. 3)."""

from configs import cifar10


def get_config():
    config = cifar10.get_config()
    config.dataset.name = "svhn_cropped"
    config.dataset.augment = "crop"
    config.train.checkpoint_every_steps = 572  # about one epoch of 73,257 images
    return config
