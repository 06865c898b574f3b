"""Default configuration: every field a run reads, with the paper's CIFAR-10 settings.

Experiment configs (cifar10.py, imagenet.py, ...) start from this one and override
what differs. Every field can be overridden on the command line, e.g.
``--config.model.width=128 --config.model.base_width=18``.
All values are validated in one place (``widesparse_jax.config.validate_config``)
before any work starts.
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    _dataset(config)
    _model(config)
    _sparsity(config)
    _optimizer(config)
    _train(config)
    return config


def _dataset(config: ml_collections.ConfigDict) -> None:
    """Sets the input pipeline (``config.dataset``)."""
    # ---- data -------------------------------------------------------------------
    config.dataset = ml_collections.ConfigDict()
    config.dataset.name = (
        "cifar10"  # mnist|fashion_mnist|cifar10|cifar100|svhn_cropped|imagenet2012
    )
    config.dataset.data_dir = config_dict.placeholder(str)  # TFDS data_dir (None: TFDS default)
    config.dataset.source = (
        "auto"  # auto|tfds|idx ('idx': local IDX files, e.g. Debian's Fashion-MNIST)
    )
    config.dataset.idx_dir = config_dict.placeholder(str)  # None: /usr/share/datasets/<name>
    config.dataset.augment = "cifar_crop_flip"  # cifar_crop_flip|crop|imagenet|none
    config.dataset.normalization = "channel"  # channel|pixel|none
    # 'channel' constants: the dataset's own mean/std, or 'imagenet' (what the PyTorch baseline
    # uses for CIFAR/SVHN; for exact parity with its runs).
    config.dataset.channel_stats = "dataset"  # dataset|imagenet
    config.dataset.train_subset = config_dict.placeholder(int)  # None: full training set
    config.dataset.subset_seed = config_dict.placeholder(int)  # None: first N examples
    config.dataset.image_size = config_dict.placeholder(int)  # ImageNet crop size (None: 224)


def _model(config: ml_collections.ConfigDict) -> None:
    """Sets the network (``config.model``)."""
    # ---- model ------------------------------------------------------------------
    config.model = ml_collections.ConfigDict()
    config.model.name = "resnet18"  # resnet18|mlp|resnet18_bottleneck|mlp_bottleneck
    config.model.width = 64
    # Width of the dense net whose weight count the (wider) net keeps.
    # None (or 0, the spelling on the command line: --config.model.base_width=0): dense.
    config.model.base_width = config_dict.placeholder(int)
    config.model.stem = "cifar"  # cifar|imagenet (ResNet-18 only)
    config.model.parametrization = "standard"  # standard|ntk (MLP)|mup
    # mup only: the width at which the muP net equals the standard one (init and lr scale
    # relative to it). Not the sparsity base_width.
    config.model.mup_base_width = config_dict.placeholder(int)
    # mup only: fan-in of a sparse layer = fan_in * density ('effective') or fan_in ('nominal').
    config.model.mup_fan_in_mode = "effective"
    config.model.use_bias = True  # MLP only
    config.model.activation = "relu"  # MLP only: relu|linear
    config.model.init_distribution = "uniform"  # MLP only: uniform|normal
    config.model.bottleneck = "linear"  # *_bottleneck models only: linear|nonlinear
    config.model.dtype = "float32"  # compute dtype: float32|bfloat16 (params stay float32)


def _sparsity(config: ml_collections.ConfigDict) -> None:
    """Sets the mask (``config.sparsity``)."""
    # ---- sparsity ---------------------------------------------------------------
    config.sparsity = ml_collections.ConfigDict()
    config.sparsity.method = "paper"  # paper|uniform|erk
    config.sparsity.granularity = "weight"  # weight|kernel (the baseline's io_only)
    config.sparsity.dense_layers = ()  # layer names kept dense, e.g. ('cl',) for the NTK MLP
    config.sparsity.mask_seed = config_dict.placeholder(int)  # None: same as train.seed
    config.sparsity.apply = "update"  # update (optimizer) | forward (also forward pass) | sparse (kept weights only; MLP, kernel-granularity ResNet-18)
    # sparse: MLP layers below this density run sparse (measured per-layer crossover 0.017-0.028
    # at widths 256-4096: benchmarks/sparse_compute.py --crossover, docs/performance.md)
    config.sparsity.sparse_below_density = 0.02
    # sparse: kernel-granularity ResNet convs below this channel density run sparse (measured
    # per-layer crossover 0.014-0.077, median ~0.036, widths 64/128: --conv, docs/performance.md)
    config.sparsity.sparse_conv_below_density = 0.03


def _optimizer(config: ml_collections.ConfigDict) -> None:
    """Sets SGD and its lr schedule (``config.optimizer``)."""
    # ---- optimizer --------------------------------------------------------------
    config.optimizer = ml_collections.ConfigDict()
    # None is allowed when the config carries per-width tables (lr_table_dense/lr_table_sparse).
    config.optimizer.lr = config_dict.FieldReference(0.1, field_type=float)
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = False
    config.optimizer.weight_decay = 5e-4  # coupled (added to the gradient), as torch.optim.SGD
    config.optimizer.schedule = "multistep"  # constant|multistep|cosine
    config.optimizer.milestones = (50, 120, 200)  # epochs (multistep)
    config.optimizer.gamma = 0.1  # multistep factor
    config.optimizer.warmup_epochs = 0


def _train(config: ml_collections.ConfigDict) -> None:
    """Sets the loop (``config.train``)."""
    # ---- training ---------------------------------------------------------------
    config.train = ml_collections.ConfigDict()
    config.train.seed = 0
    config.train.num_epochs = 300
    config.train.batch_size = 128  # global batch, split over all devices of all hosts
    config.train.eval_batch_size = 1000
    config.train.num_train_steps = -1  # > 0: stop after this many steps (overrides num_epochs)
    config.train.eval_every_epochs = 1
    config.train.log_every_steps = 100
    config.train.checkpoint_every_steps = 1000
    config.train.max_checkpoints_to_keep = 2
    # A checkpoint is "sane" (kept, resumed after a divergence) while the loss computed with
    # its weights is finite and <= this x the run's first loss (docs/trust.md).
    config.train.sane_loss_factor = 100.0
    config.train.prefetch = 2
