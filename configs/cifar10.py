"""CIFAR-10, ResNet-18 (paper Sec. 3 / Fig. 1): wd 5e-4, 300 epochs, lr 0.1 x0.1 at 50/120/200, batch 128.

Sparse-wide run at the weight count of width 18, e.g.
  python main.py --config=configs/cifar10.py --workdir=/tmp/c10_w64 \
      --config.model.width=64 --config.model.base_width=18
"""

from configs import default


def get_config():
    config = default.get_config()
    config.dataset.name = "cifar10"
    config.dataset.augment = "cifar_crop_flip"
    config.dataset.normalization = "channel"
    config.model.name = "resnet18"
    config.model.stem = "cifar"
    config.model.width = 18
    config.optimizer.weight_decay = 5e-4
    config.optimizer.schedule = "multistep"
    config.optimizer.milestones = (50, 120, 200)
    config.train.num_epochs = 300
    config.train.batch_size = 128
    # One checkpoint per epoch (390 steps) bounds lost work after a crash.
    config.train.checkpoint_every_steps = 390
    return config
