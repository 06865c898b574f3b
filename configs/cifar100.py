"""CIFAR-100, ResNet-18: the CIFAR-10 settings with 100 classes (paper Fig. 1)."""

from configs import cifar10


def get_config():
    config = cifar10.get_config()
    config.dataset.name = "cifar100"
    return config
