"""ImageNet, ResNet-18 (paper Table 1): wd 1e-4, cosine, 150 epochs, RandomResizedCrop(224, 0.2-1) + flip.

Widths 64/90/128/181/256 dense, and sparse at the weight count of width 64 (11.7 M):
  python main.py --config=configs/imagenet.py --workdir=gs://.../w128_sparse \
      --config.model.width=128 --config.model.base_width=64
The global batch of 256 is split over all devices of all hosts.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.dataset.name = "imagenet2012"
    config.dataset.source = "tfds"
    config.dataset.augment = "imagenet"
    config.dataset.normalization = "channel"
    config.model.name = "resnet18"
    config.model.stem = "imagenet"
    config.model.width = 64
    config.optimizer.lr = 0.1
    config.optimizer.weight_decay = 1e-4
    config.optimizer.schedule = "cosine"
    config.train.num_epochs = 150
    config.train.batch_size = 256
    config.train.eval_batch_size = 500
    config.train.log_every_steps = 500
    config.train.checkpoint_every_steps = 5000
    return config
