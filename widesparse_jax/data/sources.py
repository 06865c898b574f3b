"""Where the examples come from: TFDS (prepared or downloaded) or local IDX files.

The one place that knows the default IDX directories (the Debian packages'
``dataset-fashion-mnist`` layout), the IDX file names and format, how a TFDS split is named,
read whole or counted, and which source ``'auto'`` picks. TensorFlow is imported lazily,
only when a TFDS source is used.
"""

from __future__ import annotations

import functools
import gzip
import os
import threading
from typing import TYPE_CHECKING, Optional

import numpy as np

if TYPE_CHECKING:
    from widesparse_jax.data.spec import DataSpec

# Directories searched (in order) when no idx_dir is given; also the datasets IDX files exist for.
DEFAULT_IDX_DIRS = {
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist", "/usr/share/datasets/fashion_mnist"),
    "mnist": ("/usr/share/datasets/mnist",),
}
IDX_DATASETS = tuple(DEFAULT_IDX_DIRS)
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049
# Held while TFDS constructs a builder or a dataset: that touches process-global state
# (``tfds.testing.mock_data`` swaps the whole file system while a dataset is built), and the
# ImageNet train stream opens its next epoch in a background thread.
TFDS_LOCK = threading.RLock()


# ----------------------------------------------------------------------------- IDX files


def _idx_dir_candidates(name: str, idx_dir: Optional[str]) -> tuple:
    if idx_dir is not None:
        return (idx_dir,)
    return DEFAULT_IDX_DIRS.get(name, ())


def _find_idx_file(directory: str, stem: str) -> Optional[str]:
    """The path of IDX file ``stem`` in directory (gzipped or not, '-idx' or '.idx'), or None."""
    dotted = stem.replace("-idx", ".idx")
    for fname in (stem + ".gz", stem, dotted + ".gz", dotted):
        path = os.path.join(directory, fname)
        if os.path.isfile(path):
            return path
    return None


def find_idx_dir(name: str, idx_dir: Optional[str] = None) -> Optional[str]:
    """The directory holding all four IDX files of ``name``, else None.

    Looks in ``idx_dir`` when given, otherwise in the default directories of ``name``
    (``DEFAULT_IDX_DIRS``). Datasets without IDX files (everything but mnist and
    fashion_mnist) give None.
    """
    if name not in DEFAULT_IDX_DIRS:
        return None
    for d in _idx_dir_candidates(name, idx_dir):
        if all(_find_idx_file(d, s) for pair in IDX_FILES.values() for s in pair):
            return d
    return None


def _missing_idx_message(name: str, idx_dir: Optional[str]) -> str:
    expected = [s + ".gz" for pair in IDX_FILES.values() for s in pair]
    return f"No IDX files for {name} in {_idx_dir_candidates(name, idx_dir)}; expected {expected}."


def _read_idx(path: str, expect_magic: int) -> np.ndarray:
    """The uint8 array stored in an IDX file (read-only, cached per file path/size/mtime)."""
    st = os.stat(path)
    return _read_idx_cached(path, st.st_size, st.st_mtime_ns, expect_magic)


@functools.lru_cache(maxsize=4)
def _read_idx_cached(path: str, size: int, mtime_ns: int, expect_magic: int) -> np.ndarray:
    del size, mtime_ns  # cache keys only
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[:4], "big")
    if magic != expect_magic:
        raise ValueError(f"{path}: IDX magic {magic} != expected {expect_magic}; corrupt file?")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims)) if dims else 0
    if len(raw) - offset != expected:
        raise ValueError(
            f"{path}: {len(raw) - offset} payload bytes, expected {expected} for "
            f"shape {dims}; truncated file?"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _idx_count(path: str) -> int:
    """Number of items in an IDX file, from its header alone."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        return int.from_bytes(f.read(8)[4:8], "big")


def _check_idx_split(split: str) -> None:
    if split not in IDX_FILES:
        raise ValueError(f'IDX data has splits "train" and "test", got {split!r}.')


def load_idx(name: str, split: str, idx_dir: Optional[str]) -> tuple:
    """A whole IDX split: (uint8 [N, H, W, 1], int32 [N])."""
    _check_idx_split(split)
    d = find_idx_dir(name, idx_dir)
    if d is None:
        raise ValueError(_missing_idx_message(name, idx_dir))
    img_stem, lbl_stem = IDX_FILES[split]
    images = _read_idx(_find_idx_file(d, img_stem), _IMAGES_MAGIC)
    labels = _read_idx(_find_idx_file(d, lbl_stem), _LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{d}: {images.shape[0]} images but {labels.shape[0]} labels ({split}).")
    return images[..., None], labels.astype(np.int32)


def idx_split_size(name: str, split: str, idx_dir: Optional[str]) -> int:
    """Examples in an IDX split, read from the label file's header."""
    _check_idx_split(split)
    return _idx_count(_find_idx_file(find_idx_dir(name, idx_dir), IDX_FILES[split][1]))


# ----------------------------------------------------------------------------- TFDS


def import_tf() -> tuple:
    """(tensorflow, tensorflow_datasets), with TensorFlow kept off accelerators (JAX owns them)."""
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
        tf.config.set_visible_devices([], "TPU")
    except (RuntimeError, ValueError):
        pass
    import tensorflow_datasets as tfds

    return tf, tfds


def _tfds_prepared(name: str, data_dir: Optional[str]) -> bool:
    """Whether TFDS has ``name`` generated in ``data_dir`` (cheap file check before importing TF)."""
    root = (
        data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")
    )
    if "://" not in str(root) and not os.path.isdir(os.path.join(root, name)):
        return False
    try:
        _, tfds = import_tf()
        with TFDS_LOCK:
            return bool(tfds.builder(name, data_dir=data_dir).is_prepared())
    except Exception:  # noqa: BLE001 - any failure means "not usable": fall back.
        return False


def tfds_split_name(name: str, split: str) -> str:
    """The TFDS split behind ``split``: ImageNet's labelled held-out 'test' is 'validation'."""
    if name == "imagenet2012" and split == "test":
        return "validation"
    return split


def load_tfds_arrays(name: str, split: str, data_dir: Optional[str], download: bool) -> tuple:
    """A whole TFDS split as (uint8 [N, H, W, C], int32 [N]), in file order. Small datasets."""
    _, tfds = import_tf()
    with TFDS_LOCK:
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


def tfds_count(name: str, split: str, data_dir: Optional[str], download: bool) -> int:
    """Examples in a TFDS split: from metadata, else by reading the records (no decoding)."""
    _, tfds = import_tf()
    try:
        with TFDS_LOCK:
            builder = tfds.builder(name, data_dir=data_dir)
        return int(builder.info.splits[split].num_examples)
    except Exception:  # noqa: BLE001 - e.g. mock data or unprepared: count instead.
        pass
    try:
        with TFDS_LOCK:
            ds = tfds.load(
                name,
                split=split,
                data_dir=data_dir,
                shuffle_files=False,
                download=download,
                decoders={"image": tfds.decode.SkipDecoding()},
            )
    except Exception:  # noqa: BLE001 - TFDS raises many types for "archives missing".
        if name in MANUAL_DOWNLOAD:
            raise ValueError(imagenet_manual_message(data_dir)) from None
        raise
    return int(ds.reduce(np.int64(0), lambda c, _: c + 1).numpy())


# ----------------------------------------------------------------------------- choosing a source


MANUAL_DOWNLOAD = ("imagenet2012",)  # TFDS cannot download these: the user places the archives.


def imagenet_manual_message(data_dir: Optional[str]) -> str:
    """The one message a user without prepared ImageNet sees: where the archives go, one command."""
    root = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    manual = os.path.join(root, "downloads", "manual")
    return (
        f"ImageNet (imagenet2012) is not prepared in data_dir={root!r}, and it cannot be "
        "downloaded automatically. Download ILSVRC2012_img_train.tar and "
        "ILSVRC2012_img_val.tar from https://image-net.org (registration needed), put them in "
        f"{manual}/ and run once:\n"
        f"  tfds build imagenet2012 --data_dir={root} --manual_dir={manual}\n"
        "then rerun with --config.dataset.data_dir=" + root + "."
    )


def _unavailable_message(spec: DataSpec) -> str:
    name, hint = spec.name, ""
    if name in DEFAULT_IDX_DIRS:
        hint = (
            f" or put the IDX files in one of {list(_idx_dir_candidates(name, spec.idx_dir))} "
            f"(Debian: apt-get install dataset-fashion-mnist) / pass idx_dir"
        )
    if name in MANUAL_DOWNLOAD:
        return imagenet_manual_message(spec.data_dir)
    return (
        f"Dataset {name!r} is not available: TFDS data is not prepared in "
        f'data_dir={spec.data_dir!r}{hint}. To download it with TFDS, pass source="tfds" '
        f"(needs internet) or run `tfds build {name} --data_dir=...`."
    )


def resolve_source(spec: DataSpec) -> str:
    """'tfds' or 'idx'. 'auto': TFDS if prepared in data_dir, else IDX files, else an error."""
    if spec.source == "idx":
        if find_idx_dir(spec.name, spec.idx_dir) is None:
            raise ValueError(_missing_idx_message(spec.name, spec.idx_dir))
        return "idx"
    if spec.source == "tfds":
        return "tfds"
    if _tfds_prepared(spec.name, spec.data_dir):
        return "tfds"
    if find_idx_dir(spec.name, spec.idx_dir) is not None:
        return "idx"
    raise ValueError(_unavailable_message(spec))


def load_split(spec: DataSpec, split: str) -> tuple:
    """A whole split of a small dataset: (uint8 [N, H, W, C], int32 [N]), in file order."""
    if resolve_source(spec) == "idx":
        images, labels = load_idx(spec.name, split, spec.idx_dir)
    else:
        images, labels = load_tfds_arrays(spec.name, split, spec.data_dir, spec.download)
    if images.shape[1:] != spec.image_shape:
        raise ValueError(
            f"{spec.name}: images have shape {images.shape[1:]}, expected {spec.image_shape}."
        )
    return images, labels


def split_sizes(spec: DataSpec, splits: tuple = ("train", "test")) -> tuple:
    """Examples in each split ('test' means ImageNet's 'validation'), without decoding images."""
    if resolve_source(spec) == "idx":
        return tuple(idx_split_size(spec.name, s, spec.idx_dir) for s in splits)
    return tuple(
        tfds_count(spec.name, tfds_split_name(spec.name, s), spec.data_dir, spec.download)
        for s in splits
    )
