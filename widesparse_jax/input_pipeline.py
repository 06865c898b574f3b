"""Input pipeline: TFDS or local IDX files -> per-device numpy batches.

Batches are dicts of numpy arrays shaped for ``jax.pmap`` over the local devices:

* ``'image'``: float32 ``[local_devices, per_device_batch, H, W, C]``
* ``'label'``: int32 ``[local_devices, per_device_batch]``
* ``'mask'`` (eval only): bool ``[local_devices, per_device_batch]``, False for padding.

Two back ends share the same public functions:

* Small datasets (MNIST, Fashion-MNIST, CIFAR-10/100, SVHN): the split is read into a uint8
  numpy array once (from TFDS, or from IDX files for MNIST/Fashion-MNIST when TFDS data is not
  prepared), and shuffling, augmentation and batching are done in numpy. Every random choice
  is a pure function of ``(seed, epoch, example index)``:

  - epoch ``e`` visits the examples in ``np.random.default_rng([seed, e]).permutation(n)``
    order, drop-remainder (the last ``n % global_batch`` examples of each epoch are unused);
  - crop offsets and flips are counter-based hashes (splitmix64) of
    ``(seed, epoch, example index)``, where the index is the example's position in the
    (subset) training array.

  Hence resuming at ``start_step`` is exact and O(1): the epoch and in-epoch offset are
  computed, nothing earlier is generated. Multi-host: every process reads the (small) split and
  computes the same global permutation; process ``p`` takes rows ``[p*L, (p+1)*L)`` of each
  global batch (``L = global_batch / process_count``), so the global stream does not depend on
  the number of processes or devices.

* ImageNet (``imagenet2012``): streamed with tf.data, never held in memory. Process ``p`` reads
  the contiguous slice ``train[p*n_p:(p+1)*n_p]`` with ``n_p = n // process_count`` (the same
  even, drop-remainder split as ``tfds.split_for_jax_process``). Epoch ``e`` shuffles files and a
  ``shuffle_buffer``-sized window with seeds derived from ``(seed, e)``; augmentation uses
  stateless TF random ops keyed by ``(seed, epoch, process_index, position in the epoch
  stream)``. Resume is exact: the stream of an epoch is deterministic, so ``start_step`` builds
  the epoch's dataset and ``skip``s the already-consumed records *before* decoding (the skipped
  records are still read from disk and pass through the shuffle buffer, but are not decoded or
  augmented). Exactness relies on tf.data determinism (``deterministic=True``, the default) and
  on identical files/TFDS versions between the runs.

Normalization: ``'channel'`` subtracts/divides the dataset's standard per-channel mean/std
(on the [0, 1] scale); ``'pixel'`` uses a mean/std *image* computed from the training
(sub)set (the NTK MLP setting; pixels with zero std map to 0); ``'none'`` only scales to
[0, 1]. Crop padding is zero in raw pixel space (as torchvision's ``RandomCrop(padding=4)``).
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import math
import os
import queue
import threading
from typing import Any, Iterator, Optional

import numpy as np

# ----------------------------------------------------------------------------- constants

SMALL_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn_cropped")
STREAMING_DATASETS = ("imagenet2012",)
DATASETS = SMALL_DATASETS + STREAMING_DATASETS
SOURCES = ("auto", "tfds", "idx")
AUGMENTS = ("cifar_crop_flip", "crop", "imagenet", None)
NORMALIZATIONS = ("channel", "pixel", "none")

_NUM_CLASSES = {
    "mnist": 10,
    "fashion_mnist": 10,
    "cifar10": 10,
    "cifar100": 100,
    "svhn_cropped": 10,
    "imagenet2012": 1000,
}
_NATIVE_SHAPE = {
    "mnist": (28, 28, 1),
    "fashion_mnist": (28, 28, 1),
    "cifar10": (32, 32, 3),
    "cifar100": (32, 32, 3),
    "svhn_cropped": (32, 32, 3),
}
# Sizes of the real splits; used only when TFDS metadata is unavailable AND counting fails.
_KNOWN_SIZES = {
    "mnist": (60000, 10000),
    "fashion_mnist": (60000, 10000),
    "cifar10": (50000, 10000),
    "cifar100": (50000, 10000),
    "svhn_cropped": (73257, 26032),
    "imagenet2012": (1281167, 50000),
}

# Standard per-channel statistics on the [0, 1] scale (mean, std over all training pixels).
CHANNEL_STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn_cropped": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "imagenet2012": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
# The PyTorch baseline normalizes CIFAR/SVHN with the ImageNet constants; channel_stats='imagenet'
# reproduces that for 3-channel datasets.
CHANNEL_STATS_CHOICES = ("dataset", "imagenet")

DEFAULT_IDX_DIRS = {
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist", "/usr/share/datasets/fashion_mnist"),
    "mnist": ("/usr/share/datasets/mnist",),
}
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

IMAGENET_IMAGE_SIZE = 224
IMAGENET_CROP_FRACTION = 0.875  # eval: resize shorter side to size / 0.875 (256), center crop.


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset. ``image_shape`` is (H, W, C) as the model sees it."""

    name: str
    num_classes: int
    image_shape: tuple
    num_train: int
    num_test: int


# ----------------------------------------------------------------------------- validation


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; allowed: {', '.join(DATASETS)}.")


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"Unknown source {source!r}; allowed: {', '.join(SOURCES)}.")


def _normalize_augment(name: str, augment: Optional[str]) -> Optional[str]:
    if augment in ("none", ""):
        augment = None
    if augment not in AUGMENTS:
        raise ValueError(
            f"Unknown augment {augment!r}; allowed: cifar_crop_flip, crop, imagenet, None."
        )
    if name in STREAMING_DATASETS and augment not in ("imagenet", None):
        raise ValueError(
            f'augment={augment!r} is not available for {name}; use "imagenet" or None.'
        )
    if name in SMALL_DATASETS and augment == "imagenet":
        raise ValueError(
            f'augment="imagenet" is only for imagenet2012, not {name}; use '
            '"cifar_crop_flip", "crop" or None.'
        )
    return augment


def _check_int(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


@dataclasses.dataclass(frozen=True)
class _Layout:
    """How a global batch is split: process_count x local_devices x per_device."""

    global_batch: int
    local_devices: int
    process_index: int
    process_count: int

    @property
    def local_batch(self) -> int:
        return self.global_batch // self.process_count

    @property
    def per_device(self) -> int:
        return self.local_batch // self.local_devices


def _layout(global_batch_size, num_local_devices, process_index, process_count) -> _Layout:
    if num_local_devices is None or process_index is None or process_count is None:
        import jax  # Lazy: the pipeline itself does not need jax.

        if num_local_devices is None:
            num_local_devices = jax.local_device_count()
        if process_index is None:
            process_index = jax.process_index()
        if process_count is None:
            process_count = jax.process_count()
    global_batch_size = _check_int(global_batch_size, "global_batch_size", 1)
    num_local_devices = _check_int(num_local_devices, "num_local_devices", 1)
    process_count = _check_int(process_count, "process_count", 1)
    process_index = _check_int(process_index, "process_index", 0)
    if process_index >= process_count:
        raise ValueError(f"process_index={process_index} must be < process_count={process_count}.")
    total = num_local_devices * process_count
    if global_batch_size % total:
        raise ValueError(
            f"global batch size {global_batch_size} is not divisible by the total device count "
            f"{total} ({process_count} process(es) x {num_local_devices} local device(s))."
        )
    return _Layout(global_batch_size, num_local_devices, process_index, process_count)


def steps_per_epoch(num_train_examples: int, global_batch_size: int) -> int:
    """Full global batches per epoch (drop remainder). Raises if the batch exceeds the data."""
    num_train_examples = _check_int(num_train_examples, "num_train_examples", 1)
    global_batch_size = _check_int(global_batch_size, "global_batch_size", 1)
    if global_batch_size > num_train_examples:
        raise ValueError(
            f"global batch size {global_batch_size} exceeds the number of training "
            f"examples {num_train_examples}."
        )
    return num_train_examples // global_batch_size


# ----------------------------------------------------------------------------- sources


def _import_tfds():
    import tensorflow as tf

    try:  # Keep TF off accelerators: JAX owns them.
        tf.config.set_visible_devices([], "GPU")
        tf.config.set_visible_devices([], "TPU")
    except (RuntimeError, ValueError):
        pass
    import tensorflow_datasets as tfds

    return tf, tfds


def _idx_dir_candidates(name: str, idx_dir: Optional[str]) -> tuple:
    if idx_dir is not None:
        return (idx_dir,)
    return DEFAULT_IDX_DIRS.get(name, ())


def _find_idx_file(directory: str, stem: str) -> Optional[str]:
    for fname in (
        stem + ".gz",
        stem,
        stem.replace("-idx", ".idx") + ".gz",
        stem.replace("-idx", ".idx"),
    ):
        path = os.path.join(directory, fname)
        if os.path.isfile(path):
            return path
    return None


def _idx_dir_for(name: str, idx_dir: Optional[str]) -> Optional[str]:
    """The first directory holding all four IDX files of ``name``, else None."""
    if name not in DEFAULT_IDX_DIRS:
        return None
    for d in _idx_dir_candidates(name, idx_dir):
        if all(_find_idx_file(d, s) for pair in _IDX_FILES.values() for s in pair):
            return d
    return None


def _tfds_prepared(name: str, data_dir: Optional[str]) -> bool:
    """Whether TFDS has ``name`` generated in ``data_dir`` (cheap file check before importing TF)."""
    root = (
        data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")
    )
    if "://" not in str(root) and not os.path.isdir(os.path.join(root, name)):
        return False
    try:
        _, tfds = _import_tfds()
        return bool(tfds.builder(name, data_dir=data_dir).is_prepared())
    except Exception:  # noqa: BLE001 - any failure means "not usable": fall back.
        return False


def _resolve_source(name: str, source: str, data_dir: Optional[str], idx_dir: Optional[str]) -> str:
    """'tfds' or 'idx'. 'auto': TFDS if prepared in data_dir, else IDX files, else error."""
    _check_source(source)
    if source == "idx":
        if name not in DEFAULT_IDX_DIRS:
            raise ValueError(
                f'source="idx" supports only {sorted(DEFAULT_IDX_DIRS)}, not {name!r}.'
            )
        if _idx_dir_for(name, idx_dir) is None:
            raise ValueError(
                f"No IDX files for {name} in {_idx_dir_candidates(name, idx_dir)}; "
                f"expected {[s + '.gz' for p in _IDX_FILES.values() for s in p]}."
            )
        return "idx"
    if source == "tfds":
        return "tfds"
    if _tfds_prepared(name, data_dir):
        return "tfds"
    if _idx_dir_for(name, idx_dir) is not None:
        return "idx"
    hint = ""
    if name in DEFAULT_IDX_DIRS:
        hint = (
            f" or put the IDX files in one of {list(_idx_dir_candidates(name, idx_dir))} "
            f"(Debian: apt-get install dataset-fashion-mnist) / pass idx_dir"
        )
    if name == "imagenet2012":
        hint = (
            " (ImageNet needs a manual download: place the ILSVRC2012 tar files in "
            "<data_dir>/downloads/manual and run tfds build imagenet2012)"
        )
    raise ValueError(
        f"Dataset {name!r} is not available: TFDS data is not prepared in data_dir={data_dir!r}"
        f'{hint}. To download it with TFDS, pass source="tfds" (needs internet) or run '
        f"`tfds build {name} --data_dir=...`."
    )


def _read_idx(path: str, expect_magic: int) -> np.ndarray:
    """The array stored in an IDX file (read-only, cached per file path/size/mtime)."""
    st = os.stat(path)
    return _read_idx_cached(path, st.st_size, st.st_mtime_ns, expect_magic)


@functools.lru_cache(maxsize=4)
def _read_idx_cached(path: str, size: int, mtime_ns: int, expect_magic: int) -> np.ndarray:
    del size, mtime_ns  # cache keys only
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    if magic != expect_magic:
        raise ValueError(f"{path}: IDX magic {magic} != expected {expect_magic}; corrupt file?")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims)) if dims else 0
    if len(data) - offset != expected:
        raise ValueError(
            f"{path}: {len(data) - offset} payload bytes, expected {expected} for "
            f"shape {dims}; truncated file?"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def _idx_count(path: str) -> int:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        return int.from_bytes(f.read(8)[4:8], "big")


def _load_idx(name: str, split: str, idx_dir: Optional[str]) -> tuple:
    if split not in _IDX_FILES:
        raise ValueError(f'IDX data has splits "train" and "test", got {split!r}.')
    d = _idx_dir_for(name, idx_dir)
    img_stem, lbl_stem = _IDX_FILES[split]
    images = _read_idx(_find_idx_file(d, img_stem), 2051)
    labels = _read_idx(_find_idx_file(d, lbl_stem), 2049)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{d}: {images.shape[0]} images but {labels.shape[0]} labels ({split}).")
    return images[..., None], labels.astype(np.int32)


def _tfds_split_name(name: str, split: str) -> str:
    if name == "imagenet2012" and split == "test":
        return "validation"  # ImageNet's labelled held-out split.
    return split


def _load_tfds_arrays(name: str, split: str, data_dir: Optional[str], download: bool) -> tuple:
    """Whole split as (uint8 [N, H, W, C], int32 [N]). Small datasets only."""
    _, tfds = _import_tfds()
    ds = tfds.load(
        name,
        split=split,
        data_dir=data_dir,
        as_supervised=True,
        shuffle_files=False,
        download=download,
    )
    images, labels = [], []
    for x, y in tfds.as_numpy(ds.batch(8192)):
        images.append(x)
        labels.append(y)
    if not images:
        raise ValueError(f"TFDS split {name}:{split} is empty.")
    return np.concatenate(images).astype(np.uint8), np.concatenate(labels).astype(np.int32)


def _load_arrays(name: str, split: str, data_dir, source, idx_dir) -> tuple:
    src = _resolve_source(name, source, data_dir, idx_dir)
    if src == "idx":
        images, labels = _load_idx(name, split, idx_dir)
    else:
        images, labels = _load_tfds_arrays(name, split, data_dir, download=(source == "tfds"))
    if images.shape[1:] != _NATIVE_SHAPE[name]:
        raise ValueError(
            f"{name}: images have shape {images.shape[1:]}, expected {_NATIVE_SHAPE[name]}."
        )
    return images, labels


def _tfds_count(name: str, split: str, data_dir: Optional[str], download: bool) -> int:
    """Examples in a TFDS split: from metadata, else by reading the records (no decoding)."""
    tf, tfds = _import_tfds()
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        return int(builder.info.splits[split].num_examples)
    except Exception:  # noqa: BLE001 - e.g. mock data or unprepared: count instead.
        pass
    ds = tfds.load(
        name,
        split=split,
        data_dir=data_dir,
        shuffle_files=False,
        download=download,
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    return int(ds.reduce(np.int64(0), lambda c, _: c + 1).numpy())


def _select_subset(
    n_total: int, train_subset: Optional[int], subset_seed: Optional[int]
) -> Optional[np.ndarray]:
    """Indices of the training subset (sorted), or None for the full set."""
    if train_subset is None:
        if subset_seed is not None:
            raise ValueError("subset_seed is set but train_subset is None; set both or neither.")
        return None
    train_subset = _check_int(train_subset, "train_subset", 1)
    if train_subset > n_total:
        raise ValueError(f"train_subset={train_subset} exceeds the {n_total} training examples.")
    if subset_seed is None:
        return np.arange(train_subset)
    subset_seed = _check_int(subset_seed, "subset_seed", 0)
    rng = np.random.default_rng(subset_seed)
    return np.sort(rng.choice(n_total, size=train_subset, replace=False))


def _image_shape(name: str, image_size: Optional[int]) -> tuple:
    if name in STREAMING_DATASETS:
        size = (
            IMAGENET_IMAGE_SIZE if image_size is None else _check_int(image_size, "image_size", 8)
        )
        return (size, size, 3)
    native = _NATIVE_SHAPE[name]
    if image_size is not None and image_size != native[0]:
        raise ValueError(
            f"image_size={image_size} is not supported for {name} (native "
            f"{native[0]}x{native[1]}); use None."
        )
    return native


def dataset_info(
    name: str,
    data_dir: Optional[str] = None,
    source: str = "auto",
    *,
    idx_dir: Optional[str] = None,
    image_size: Optional[int] = None,
    train_subset: Optional[int] = None,
    split: str = "test",
) -> DatasetInfo:
    """Class count, model input shape (H, W, C) and split sizes of ``name``.

    ``num_train`` is the subset size when ``train_subset`` is given; ``num_test`` is the size of
    ``split`` (ImageNet: 'test' means 'validation'). Counts come from TFDS metadata, the IDX
    headers, or (mock/unprepared TFDS data) by reading the split's records.
    """
    _check_name(name)
    shape = _image_shape(name, image_size)
    src = _resolve_source(name, source, data_dir, idx_dir)
    if src == "idx":
        d = _idx_dir_for(name, idx_dir)
        n_train = _idx_count(_find_idx_file(d, _IDX_FILES["train"][1]))
        n_test = (
            _idx_count(_find_idx_file(d, _IDX_FILES[split][1])) if split in _IDX_FILES else None
        )
        if n_test is None:
            raise ValueError(f'IDX data has splits "train" and "test", got {split!r}.')
    else:
        download = source == "tfds"
        n_train = _tfds_count(name, "train", data_dir, download)
        n_test = _tfds_count(name, _tfds_split_name(name, split), data_dir, download)
    if train_subset is not None:
        train_subset = _check_int(train_subset, "train_subset", 1)
        if train_subset > n_train:
            raise ValueError(
                f"train_subset={train_subset} exceeds the {n_train} training examples."
            )
        n_train = train_subset
    return DatasetInfo(
        name=name,
        num_classes=_NUM_CLASSES[name],
        image_shape=shape,
        num_train=n_train,
        num_test=n_test,
    )


# ----------------------------------------------------------------------------- numpy ops

_U64 = np.uint64


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer on a uint64 array (wrapping arithmetic)."""
    x = x + _U64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def _hash_ints(seed: int, epoch: int, index: np.ndarray, stream: int, high: int) -> np.ndarray:
    """Integers in [0, high) that depend only on (seed, epoch, index, stream). index: [B]."""
    with np.errstate(over="ignore"):
        h = _mix64(np.full(index.shape, seed, dtype=_U64))
        h = _mix64(h ^ _U64(epoch))
        h = _mix64(h ^ _U64(stream))
        h = _mix64(h ^ index.astype(_U64))
    return (h % _U64(high)).astype(np.int64)


def random_crop_flip(
    images: np.ndarray, seed: int, epoch: int, indices: np.ndarray, *, pad: int, flip: bool
) -> np.ndarray:
    """Zero-pad by ``pad``, crop back to H x W at hashed offsets; optionally flip horizontally.

    images: [B, H, W, C] (any dtype); indices: [B] example ids keying the randomness.
    Offsets are uniform in [0, 2*pad] per axis; a flip happens with probability 1/2.
    """
    b, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    oy = _hash_ints(seed, epoch, indices, 0, 2 * pad + 1)
    ox = _hash_ints(seed, epoch, indices, 1, 2 * pad + 1)
    rows = oy[:, None] + np.arange(h)[None, :]  # [B, H]
    cols = ox[:, None] + np.arange(w)[None, :]  # [B, W]
    if flip:
        do_flip = _hash_ints(seed, epoch, indices, 2, 2).astype(bool)
        cols = np.where(do_flip[:, None], cols[:, ::-1], cols)
    return padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


@dataclasses.dataclass(frozen=True)
class _Normalizer:
    """x_uint8 -> float32: (x / 255 - mean) / std, where std == 0 gives 0."""

    mean: np.ndarray  # broadcastable to [H, W, C], float32
    std: np.ndarray

    def __call__(self, images: np.ndarray) -> np.ndarray:
        x = images.astype(np.float32) * np.float32(1.0 / 255.0)
        safe = np.where(self.std > 0, self.std, np.float32(1.0))
        out = (x - self.mean) / safe
        if np.any(self.std == 0):
            out = np.where(self.std > 0, out, np.float32(0.0))
        return out.astype(np.float32)


def _channel_mean_std(name: str, channel_stats: str) -> tuple:
    if channel_stats not in CHANNEL_STATS_CHOICES:
        raise ValueError(
            f"Unknown channel_stats {channel_stats!r}; allowed: {', '.join(CHANNEL_STATS_CHOICES)}."
        )
    key = name
    if channel_stats == "imagenet" and _image_shape_channels(name) == 3:
        key = "imagenet2012"
    mean, std = CHANNEL_STATS[key]
    return np.asarray(mean, np.float32), np.asarray(std, np.float32)


def _image_shape_channels(name: str) -> int:
    return 3 if name in STREAMING_DATASETS else _NATIVE_SHAPE[name][2]


def pixel_stats(images: np.ndarray) -> tuple:
    """Per-pixel mean and std images ([H, W, C] float32, [0, 1] scale) of uint8 [N, H, W, C]."""
    x = images.astype(np.float64) / 255.0
    return x.mean(axis=0).astype(np.float32), x.std(axis=0).astype(np.float32)


def _make_normalizer(
    name: str, normalization: str, channel_stats: str, train_images: Optional[np.ndarray]
) -> _Normalizer:
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"Unknown normalization {normalization!r}; allowed: {', '.join(NORMALIZATIONS)}."
        )
    if normalization == "channel":
        return _Normalizer(*_channel_mean_std(name, channel_stats))
    if normalization == "pixel":
        return _Normalizer(*pixel_stats(train_images))
    return _Normalizer(np.float32(0.0), np.float32(1.0))


# ----------------------------------------------------------------------------- prefetch


_DONE = object()


def _prefetch_worker(it: Iterator, q: queue.Queue, stop: threading.Event) -> None:
    """Producer loop. Holds no reference to the _Prefetch object, so dropping it stops us."""

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        for item in it:
            if not put((True, item)):
                return
        put((True, _DONE))
    except BaseException as e:  # noqa: BLE001 - re-raised in the consumer thread.
        put((False, e))


class _Prefetch:
    """Runs an iterator in a background thread, ``size`` items ahead. Order is unchanged.

    The worker stops when the consumer is garbage collected or calls ``close()``.
    """

    def __init__(self, it: Iterator, size: int):
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=_prefetch_worker, args=(it, self._queue, self._stop), daemon=True
        )
        self._thread.start()

    def __iter__(self):
        return self

    def __next__(self):
        if self._stop.is_set():
            raise StopIteration
        ok, item = self._queue.get()
        if not ok:
            self.close()
            raise item
        if item is _DONE:
            self.close()
            raise StopIteration
        return item

    def close(self) -> None:
        self._stop.set()

    def __del__(self):
        self.close()


def _maybe_prefetch(it: Iterator, prefetch: int) -> Iterator:
    prefetch = _check_int(prefetch, "prefetch", 0)
    return _Prefetch(it, prefetch) if prefetch > 0 else it


# ----------------------------------------------------------------------------- small datasets


def _to_device_shape(x: np.ndarray, layout: _Layout) -> np.ndarray:
    return x.reshape((layout.local_devices, layout.per_device) + x.shape[1:])


def _small_train_batches(
    images, labels, normalizer, augment, crop_padding, seed, start_step, layout: _Layout
) -> Iterator[dict]:
    n = images.shape[0]
    spe = steps_per_epoch(n, layout.global_batch)
    g, l, p = layout.global_batch, layout.local_batch, layout.process_index
    step = start_step
    epoch, perm = -1, None
    while True:
        e, offset = divmod(step, spe)
        if e != epoch:
            epoch = e
            perm = np.random.default_rng([seed, epoch]).permutation(n)
        start = offset * g + p * l
        idx = perm[start : start + l]
        x = images[idx]
        if augment is not None:
            x = random_crop_flip(
                x, seed, epoch, idx, pad=crop_padding, flip=(augment == "cifar_crop_flip")
            )
        yield {
            "image": _to_device_shape(normalizer(x), layout),
            "label": _to_device_shape(labels[idx].astype(np.int32), layout),
        }
        step += 1


def _eval_plan(n: int, layout: _Layout) -> int:
    """Number of eval batches: ceil(n / global_batch), identical on every process."""
    return max(1, math.ceil(n / layout.global_batch))


def _small_eval_batches(images, labels, normalizer, layout: _Layout) -> Iterator[dict]:
    n = images.shape[0]
    g, l, p = layout.global_batch, layout.local_batch, layout.process_index
    for b in range(_eval_plan(n, layout)):
        pos = b * g + p * l + np.arange(l)
        mask = pos < n
        idx = np.where(mask, pos, 0)
        x = normalizer(images[idx])
        x = np.where(mask[:, None, None, None], x, np.float32(0.0)).astype(np.float32)
        y = np.where(mask, labels[idx], 0).astype(np.int32)
        yield {
            "image": _to_device_shape(x, layout),
            "label": _to_device_shape(y, layout),
            "mask": _to_device_shape(mask, layout),
        }


# ----------------------------------------------------------------------------- ImageNet (tf.data)


def _tf_seed(seed: int, epoch: int, stream: int) -> int:
    """A deterministic int31 seed derived from (seed, epoch, stream)."""
    return int(_hash_ints(seed, epoch, np.array([stream]), 7, 2**31 - 1)[0])


def _decode_full(tf, image_bytes):
    return tf.io.decode_image(image_bytes, channels=3, expand_animations=False)


def _imagenet_train_image(tf, image_bytes, seed_pair, size: int):
    """RandomResizedCrop(size, scale=(0.2, 1), ratio=(3/4, 4/3)) + flip; float32 [size, size, 3].

    seed_pair: int64 [2] stateless seed. If no valid window is found in 10 attempts the whole
    image is used (torchvision falls back to a center crop instead).
    """
    seeds = tf.random.experimental.stateless_split(seed_pair, num=2)
    is_jpeg = tf.io.is_jpeg(image_bytes)
    shape = tf.cond(
        is_jpeg,
        lambda: tf.image.extract_jpeg_shape(image_bytes),
        lambda: tf.shape(_decode_full(tf, image_bytes), out_type=tf.int32),
    )
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        tf.zeros([1, 0, 4], tf.float32),
        seed=seeds[0],
        min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.2, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    oy, ox, _ = tf.unstack(begin)
    h, w, _ = tf.unstack(crop_size)
    image = tf.cond(
        is_jpeg,
        lambda: tf.io.decode_and_crop_jpeg(image_bytes, tf.stack([oy, ox, h, w]), channels=3),
        lambda: tf.image.crop_to_bounding_box(_decode_full(tf, image_bytes), oy, ox, h, w),
    )
    image = tf.image.resize(image, [size, size], method="bilinear", antialias=False)
    image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
    return image  # float32, 0..255


def _imagenet_eval_image(tf, image_bytes, size: int):
    """Resize the shorter side to round(size / 0.875) (256 for 224), center crop size x size."""
    image = _decode_full(tf, image_bytes)
    resize = int(round(size / IMAGENET_CROP_FRACTION))
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = resize / tf.reduce_min(shape)
    new_hw = tf.cast(tf.round(shape * scale), tf.int32)
    new_hw = tf.maximum(new_hw, resize)
    image = tf.image.resize(image, new_hw, method="bilinear", antialias=True)
    oy = (new_hw[0] - size) // 2
    ox = (new_hw[1] - size) // 2
    return tf.image.crop_to_bounding_box(image, oy, ox, size, size)  # float32, 0..255


def _tf_options(tf):
    options = tf.data.Options()
    options.deterministic = True
    return options


def _imagenet_shard(n: int, layout: _Layout, drop_remainder: bool) -> tuple:
    """[start, end) of this process's contiguous slice of n examples."""
    p, pc = layout.process_index, layout.process_count
    if drop_remainder:
        k = n // pc
        return p * k, (p + 1) * k
    return (p * n) // pc, ((p + 1) * n) // pc


def _imagenet_train_batches(
    name,
    data_dir,
    download,
    layout: _Layout,
    seed,
    start_step,
    augment,
    normalization,
    size,
    shuffle_buffer,
    channel_stats,
) -> Iterator[dict]:
    """Validates and counts eagerly (errors surface at creation), then returns the generator."""
    tf, tfds = _import_tfds()
    if normalization == "pixel":
        raise ValueError(
            'normalization="pixel" needs the training set in memory; not available for '
            f'{name}. Use "channel" or "none".'
        )
    normalizer = _make_normalizer(name, normalization, channel_stats, None)
    n = _tfds_count(name, "train", data_dir, download)
    start, end = _imagenet_shard(n, layout, drop_remainder=True)
    l = layout.local_batch
    spe = (end - start) // l
    if spe == 0:
        raise ValueError(
            f"local batch {l} exceeds the {end - start} training examples of process "
            f"{layout.process_index}."
        )
    mean = tf.constant(normalizer.mean * 255.0)
    std = tf.constant(normalizer.std * 255.0)
    split = f"train[{start}:{end}]"
    return _imagenet_train_gen(
        tf,
        tfds,
        name,
        data_dir,
        download,
        layout,
        seed,
        start_step,
        augment,
        size,
        shuffle_buffer,
        mean,
        std,
        split,
        spe,
    )


def _imagenet_train_gen(
    tf,
    tfds,
    name,
    data_dir,
    download,
    layout,
    seed,
    start_step,
    augment,
    size,
    shuffle_buffer,
    mean,
    std,
    split,
    spe,
) -> Iterator[dict]:
    l = layout.local_batch
    epoch, offset = divmod(start_step, spe)
    while True:
        read_config = tfds.ReadConfig(
            shuffle_seed=_tf_seed(seed, epoch, 0), options=_tf_options(tf)
        )
        ds = tfds.load(
            name,
            split=split,
            data_dir=data_dir,
            shuffle_files=True,
            download=download,
            read_config=read_config,
            decoders={"image": tfds.decode.SkipDecoding()},
        )
        ds = ds.shuffle(
            shuffle_buffer, seed=_tf_seed(seed, epoch, 1), reshuffle_each_iteration=False
        )
        ds = ds.take(spe * l).enumerate()
        if offset:
            ds = ds.skip(offset * l)
        base = tf.constant([seed, epoch], tf.int64)
        base = tf.random.experimental.stateless_fold_in(base, layout.process_index)

        def prep(i, ex, base=base):
            if augment == "imagenet":
                key = tf.random.experimental.stateless_fold_in(base, i)
                image = _imagenet_train_image(tf, ex["image"], key, size)
            else:
                image = _imagenet_eval_image(tf, ex["image"], size)
            image = (image - mean) / std
            return {"image": image, "label": tf.cast(ex["label"], tf.int32)}

        ds = ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.batch(l, drop_remainder=True).prefetch(1)
        for batch in tfds.as_numpy(ds):
            yield {
                "image": _to_device_shape(batch["image"], layout),
                "label": _to_device_shape(batch["label"], layout),
            }
        epoch, offset = epoch + 1, 0


def _imagenet_eval_batches(
    name, data_dir, download, layout: _Layout, split, normalization, size, channel_stats
) -> Iterator[dict]:
    tf, tfds = _import_tfds()
    if normalization == "pixel":
        raise ValueError(f'normalization="pixel" is not available for {name}.')
    normalizer = _make_normalizer(name, normalization, channel_stats, None)
    mean = tf.constant(normalizer.mean * 255.0)
    std = tf.constant(normalizer.std * 255.0)
    n = _tfds_count(name, split, data_dir, download)
    start, end = _imagenet_shard(n, layout, drop_remainder=False)
    n_local = end - start
    max_local = max(
        ((q + 1) * n) // layout.process_count - (q * n) // layout.process_count
        for q in range(layout.process_count)
    )
    l = layout.local_batch
    num_batches = max(1, math.ceil(max_local / l))
    ds = tfds.load(
        name,
        split=f"{split}[{start}:{end}]",
        data_dir=data_dir,
        shuffle_files=False,
        download=download,
        read_config=tfds.ReadConfig(options=_tf_options(tf)),
        decoders={"image": tfds.decode.SkipDecoding()},
    )

    def prep(ex):
        image = (_imagenet_eval_image(tf, ex["image"], size) - mean) / std
        return {"image": image, "label": tf.cast(ex["label"], tf.int32), "mask": tf.constant(True)}

    ds = ds.take(n_local).map(prep, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    pad = {
        "image": tf.zeros([size, size, 3], tf.float32),
        "label": tf.constant(0, tf.int32),
        "mask": tf.constant(False),
    }
    ds = ds.concatenate(tf.data.Dataset.from_tensors(pad).repeat())
    ds = ds.take(num_batches * l).batch(l).prefetch(1)
    return (
        {k: _to_device_shape(v, layout) for k, v in batch.items()} for batch in tfds.as_numpy(ds)
    )


# ----------------------------------------------------------------------------- public iterators


def _prepare_small_train(name, data_dir, source, idx_dir, train_subset, subset_seed):
    images, labels = _load_arrays(name, "train", data_dir, source, idx_dir)
    subset = _select_subset(images.shape[0], train_subset, subset_seed)
    if subset is not None:
        images, labels = images[subset], labels[subset]
    return images, labels


def create_train_iterator(
    name: str,
    *,
    global_batch_size: int,
    seed: int,
    start_step: int = 0,
    data_dir: Optional[str] = None,
    source: str = "auto",
    augment: Optional[str] = None,
    normalization: str = "channel",
    train_subset: Optional[int] = None,
    subset_seed: Optional[int] = None,
    image_size: Optional[int] = None,
    num_local_devices: Optional[int] = None,
    process_index: Optional[int] = None,
    process_count: Optional[int] = None,
    prefetch: int = 2,
    idx_dir: Optional[str] = None,
    crop_padding: int = 4,
    channel_stats: str = "dataset",
    shuffle_buffer: int = 10_000,
) -> Iterator[dict]:
    """Infinite, deterministic training stream of this process's share of each global batch.

    Yields {'image': float32 [D, B, H, W, C], 'label': int32 [D, B]} with D local devices and
    B = global_batch_size / (process_count * D). Batch k (counting from 0 over the whole run) is a
    function of (dataset, seed, k) only; ``start_step=k`` starts at batch k without generating the
    earlier ones. augment: 'cifar_crop_flip' (pad ``crop_padding`` + crop + flip), 'crop' (no flip,
    SVHN), 'imagenet' (RandomResizedCrop + flip), None/'none'. normalization: 'channel' | 'pixel'
    (training-subset mean/std image) | 'none' ([0, 1]). channel_stats: 'dataset' (standard
    per-dataset constants) or 'imagenet' (the PyTorch baseline's choice for CIFAR/SVHN).
    train_subset: first N examples, or a random N drawn with ``subset_seed``.
    """
    _check_name(name)
    seed = _check_int(seed, "seed", 0)
    start_step = _check_int(start_step, "start_step", 0)
    augment = _normalize_augment(name, augment)
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"Unknown normalization {normalization!r}; allowed: {', '.join(NORMALIZATIONS)}."
        )
    _channel_mean_std(name, channel_stats)  # validates channel_stats
    crop_padding = _check_int(crop_padding, "crop_padding", 0)
    size = _image_shape(name, image_size)[0]
    layout = _layout(global_batch_size, num_local_devices, process_index, process_count)
    _check_source(source)
    if name in STREAMING_DATASETS:
        if train_subset is not None or subset_seed is not None:
            raise ValueError(f"train_subset/subset_seed are not supported for streamed {name}.")
        _resolve_source(name, source, data_dir, idx_dir)
        shuffle_buffer = _check_int(shuffle_buffer, "shuffle_buffer", 1)
        it = _imagenet_train_batches(
            name,
            data_dir,
            source == "tfds",
            layout,
            seed,
            start_step,
            augment,
            normalization,
            size,
            shuffle_buffer,
            channel_stats,
        )
    else:
        images, labels = _prepare_small_train(
            name, data_dir, source, idx_dir, train_subset, subset_seed
        )
        normalizer = _make_normalizer(name, normalization, channel_stats, images)
        steps_per_epoch(images.shape[0], layout.global_batch)  # validates batch <= data
        it = _small_train_batches(
            images, labels, normalizer, augment, crop_padding, seed, start_step, layout
        )
    return _maybe_prefetch(it, prefetch)


def create_eval_iterator(
    name: str,
    *,
    global_batch_size: int,
    split: str = "test",
    data_dir: Optional[str] = None,
    source: str = "auto",
    normalization: str = "channel",
    train_subset: Optional[int] = None,
    subset_seed: Optional[int] = None,
    image_size: Optional[int] = None,
    num_local_devices: Optional[int] = None,
    process_index: Optional[int] = None,
    process_count: Optional[int] = None,
    prefetch: int = 2,
    idx_dir: Optional[str] = None,
    channel_stats: str = "dataset",
    augment: Optional[str] = None,
    seed: Optional[int] = None,
) -> Iterator[dict]:
    """Finite pass over ``split`` ('test'; ImageNet: 'validation'), each example exactly once.

    Yields {'image': float32 [D, B, H, W, C], 'label': int32 [D, B], 'mask': bool [D, B]}.
    Global batch k covers examples [k*G, (k+1)*G) (small datasets; process p holds rows
    [p*G/P, (p+1)*G/P)); the last one is padded with zero images, label 0, mask False. Every
    process yields the same number of batches. ``train_subset``/``subset_seed`` matter only for
    normalization='pixel' (statistics of the training subset). ``augment``/``seed`` are accepted
    for signature symmetry with the train iterator and ignored (eval is never augmented).
    ImageNet: resize to image_size / 0.875 + center crop.
    """
    del augment, seed
    _check_name(name)
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"Unknown normalization {normalization!r}; allowed: {', '.join(NORMALIZATIONS)}."
        )
    _channel_mean_std(name, channel_stats)
    size = _image_shape(name, image_size)[0]
    layout = _layout(global_batch_size, num_local_devices, process_index, process_count)
    _check_source(source)
    if name in STREAMING_DATASETS:
        _resolve_source(name, source, data_dir, idx_dir)
        it = _imagenet_eval_batches(
            name,
            data_dir,
            source == "tfds",
            layout,
            _tfds_split_name(name, split),
            normalization,
            size,
            channel_stats,
        )
    else:
        train_images = None
        if normalization == "pixel":
            train_images, _ = _prepare_small_train(
                name, data_dir, source, idx_dir, train_subset, subset_seed
            )
        normalizer = _make_normalizer(name, normalization, channel_stats, train_images)
        images, labels = _load_arrays(name, split, data_dir, source, idx_dir)
        it = _small_eval_batches(images, labels, normalizer, layout)
    return _maybe_prefetch(it, prefetch)
