"""Read and write the PyTorch baseline's files (google-research/wide-sparse-nets).

Baseline formats (ResNet18/ folder):

* ``model_{init,final,last,best}.pt``: a pickled dict ``{epoch, args (argparse.Namespace),
  current_acc, best_acc, state_dict, optimizer (torch SGD state_dict), scheduler}``.
* ``smask.pt``: ``{underscore layer name: bool tensor (True = FROZEN) | None (dense)}``;
  full weight shape, or (out, in) for conv layers in the baseline's io_only mode.
* ``stats.pt``: ``{'loss': {epoch: {'train', 'test'}}, 'acc1': {epoch: {...}}}`` (percent).

MLP/ folder: ``*.ckpt`` = ``{epoch, state_dict, optimizer, args}`` with ``layers.fc.*``,
``layers.cl.*`` (and ``layers.bn.*`` with BatchNorm). There is no mask file: the baseline
itself recovers its smask as ``weight == 0`` (MLP/main.py), and so does :func:`load_baseline`
when ``args.width > args.base_width``. Its ``stats.pth`` uses ``'acc'`` (a fraction).

This project's side (docs/contracts.md): Flax variables ``{'params', 'batch_stats'}`` of
``models.ResNet18`` / ``models.MLP`` (HWIO conv kernels, (in, out) dense kernels, BN
``scale/bias`` + ``mean/var``) and a keep-mask pytree (True = KEEP, None = dense / uncounted).

Conversion rules: conv OIHW <-> HWIO, linear (out, in) <-> (in, out), BN weight/bias <->
scale/bias, running_mean/var <-> mean/var (eval-mode identical: both use var + eps; note
PyTorch *updates* running_var with the unbiased batch variance, Flax with the biased one),
``layer2.0.shortcut.0.weight`` <-> ``layer2_0/shortcut_0/kernel``, smask True = frozen <->
mask True = keep. ``num_batches_tracked`` (int64) is not kept on our side; it is written as
``num_batches_tracked`` (argument) on export. Momentum buffers of torch SGD (indexed in
``model.parameters()`` order) <-> a params-shaped pytree (optax ``TraceState.trace``).

CLI (``python -m widesparse_jax.baseline``)::

  logits  --model-file M [--mask-file S] --width W --num-classes C --input X.npy --output Y.npy
  convert --model-file M [--mask-file S] --width W --num-classes C --output V.npz
  export  --input (ckpt dir | V.npz) --out-dir D [--width W --num-classes C --base-width B ...]
  stats   --stats-file stats.pt

Modules: ``layout`` (model layouts, flax <-> torch weight layout), ``formats`` (``.pt``,
``stats.pt``, npz), ``smask`` (mask files), ``optimizer`` (SGD / scheduler state, args),
``load`` (:func:`load_baseline`), ``export`` (:func:`export_baseline`, :func:`export_from`),
``logits`` (nets built by ``setup.build_model``), ``cli`` (+ ``__main__``).

torch is optional (``pip install -e .[torch]``) and imported lazily.
"""

from widesparse_jax.baseline.cli import main
from widesparse_jax.baseline.export import export_baseline, export_from
from widesparse_jax.baseline.formats import (
    empty_masks,
    load_npz,
    load_torch_file,
    read_stats,
    save_npz,
    state_dict_to_variables,
    variables_to_state_dict,
)
from widesparse_jax.baseline.layout import (
    Layer,
    Layout,
    detect_model,
    layout_for_state_dict,
    mlp_layout,
    resnet18_layout,
)
from widesparse_jax.baseline.load import BaselineModel, load_baseline
from widesparse_jax.baseline.logits import baseline_logits, flax_logits
from widesparse_jax.baseline.optimizer import (
    get_momentum,
    make_args,
    momentum_to_optimizer_state,
    optimizer_state_to_momentum,
)
from widesparse_jax.baseline.smask import (
    apply_keep_masks,
    count_kept,
    masks_to_smask,
    smask_to_masks,
)

__all__ = [
    "BaselineModel",
    "Layer",
    "Layout",
    "apply_keep_masks",
    "baseline_logits",
    "count_kept",
    "detect_model",
    "empty_masks",
    "export_baseline",
    "export_from",
    "flax_logits",
    "get_momentum",
    "layout_for_state_dict",
    "load_baseline",
    "load_npz",
    "load_torch_file",
    "main",
    "make_args",
    "masks_to_smask",
    "mlp_layout",
    "momentum_to_optimizer_state",
    "optimizer_state_to_momentum",
    "read_stats",
    "resnet18_layout",
    "save_npz",
    "smask_to_masks",
    "state_dict_to_variables",
    "variables_to_state_dict",
]
