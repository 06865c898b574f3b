"""ImageNet input pipeline speed: this project's tf.data pipeline vs the baseline's loader.

  python -m benchmarks.input_pipeline [--data DIR] [--workers 1] [--batch 32] [--batches 8]

Both sides read the same JPEG files (DIR/<class>/*.JPEG, ImageFolder layout; with no --data a
small ImageNet-like set is written to a temporary folder by scripts/make_imagenet_like.py's
generator, sizes around 500x375, quality 90) and produce the batches each project hands on:

* ours: the project's host pipeline: ``tf.data`` over the files, ``imagenet.train_image``
  (torchvision's crop sampler, fused decode-and-crop JPEG, Pillow's antialiased resize to 224
  bit for bit (``data.pil_resize``), flip; uint8) or ``imagenet.eval_image`` (resize 256,
  center crop 224, uint8), batch,
  prefetch, to numpy: uint8 batches. The normalization to float32 runs on the accelerator
  (``data.device``) and is not charged to the host here. ``--workers`` = the size of the
  dataset's private thread pool (and of the parallel map), intra-op parallelism 1.
* torchvision (the real torchvision 0.28.0, see ``baseline.torchvision_ref``):
  ``ImageFolder`` + ``RandomResizedCrop(224, scale=(0.2, 1))`` + ``RandomHorizontalFlip`` +
  ``ToTensor`` + ``Normalize`` (eval: ``Resize(256)`` + ``CenterCrop(224)`` + ...) in a
  ``DataLoader`` (``num_workers=--workers``, shuffled, persistent workers).

img/s/core = images / CPU seconds used by the pipeline (this process's threads and the
loader's worker processes, user + system, from psutil) over the timed batches, after a warm-up
of two batches: a per-core rate that another user of a shared machine does not change much.
Wall-clock img/s are printed too. The four measurements are interleaved ``--repeats`` times
and the medians kept. The last line is
``train pipeline: X img/s/core, torchvision: Y img/s/core, ratio R``.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time

import numpy as np
import psutil

from widesparse_jax.baseline import torchvision_ref as tvr
from widesparse_jax.data import imagenet, sources

SIZE = 224


def write_image_folder(root: str, classes: int, per_class: int, seed: int = 0) -> list:
    """ImageNet-like JPEGs in ImageFolder layout root/<synset>/<k>.JPEG; returns the paths."""
    from scripts import make_imagenet_like as mk

    rng, paths = np.random.default_rng(seed), []
    for c in range(classes):
        synset = f"n{1440764 + c:08d}"
        os.makedirs(os.path.join(root, synset), exist_ok=True)
        for k in range(per_class):
            kind = "gray" if rng.uniform() < 0.03 else "rgb"
            payload = mk.encode(mk.natural_image(rng, synset, *mk.image_size(rng, 1.0)), kind)
            path = os.path.join(root, synset, f"{synset}_{k}.JPEG")
            with open(path, "wb") as f:
                f.write(payload)
            paths.append(path)
    return paths


def list_images(root: str) -> list:
    return sorted(
        os.path.join(d, f) for d, _, files in os.walk(root) for f in files if f.endswith(".JPEG")
    )


# ----------------------------------------------------------------------------- pipelines


def ours(paths: list, train: bool, workers: int, batch: int, seed: int = 0):
    """Iterator of uint8 [batch, 224, 224, 3] numpy batches (the project's host transforms)."""
    tf, _ = sources.import_tf()
    base = tf.constant([seed, 0], tf.int64)

    def prep(i, path):
        data = tf.io.read_file(path)
        if train:
            key = tf.random.experimental.stateless_fold_in(base, i)
            image = imagenet.train_image(tf, data, key, SIZE)
        else:
            image = imagenet.eval_image(tf, data, SIZE)
        return image

    options = tf.data.Options()
    options.threading.private_threadpool_size = workers
    options.threading.max_intra_op_parallelism = 1
    ds = tf.data.Dataset.from_tensor_slices(paths).repeat().shuffle(len(paths), seed=seed)
    ds = ds.enumerate().map(prep, num_parallel_calls=workers, deterministic=True)
    ds = ds.batch(batch, drop_remainder=True).prefetch(2).with_options(options)
    return ds.as_numpy_iterator()


def torchvision_loader(root: str, train: bool, workers: int, batch: int):
    """Iterator of (images float [batch, 3, 224, 224], labels) from the baseline-style loader."""
    import torch

    tv = tvr.import_torchvision()
    transform = tvr.train_transform(SIZE, (0.2, 1.0)) if train else tvr.eval_transform(SIZE)
    dataset = tv.datasets.ImageFolder(root, transform=transform)
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=10**8)
    return iter(
        torch.utils.data.DataLoader(
            dataset, batch_size=batch, sampler=sampler, num_workers=workers,
            drop_last=True,
        )
    )  # fmt: skip


# ----------------------------------------------------------------------------- timing


MIN_CPU_S = 0.1


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its live children."""
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return total


def measure(make_iter, batch: int, batches: int) -> dict:
    """Images per CPU second and per wall second over ``batches`` after a 2-batch warm-up
    (more batches while fewer than MIN_CPU_S CPU seconds have passed: the OS counts CPU time
    in clock ticks, 10 ms, so a shorter window could read as zero)."""
    it = make_iter()
    for _ in range(2):
        next(it)
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    done = 0
    while done < batches or _cpu_seconds() - cpu0 < MIN_CPU_S:
        next(it)
        done += 1
    cpu, wall = _cpu_seconds() - cpu0, time.perf_counter() - t0
    del it
    gc.collect()
    n = batch * done
    return {"per_core": n / cpu, "wall": n / wall}


def run(root: str, workers: int, batch: int, batches: int, repeats: int) -> dict:
    """Medians over interleaved repeats: {'train'|'eval': {'ours'|'torchvision': {...}}}."""
    paths = list_images(root)
    cases = {
        ("train", "ours"): lambda: ours(paths, True, workers, batch),
        ("train", "torchvision"): lambda: torchvision_loader(root, True, workers, batch),
        ("eval", "ours"): lambda: ours(paths, False, workers, batch),
        ("eval", "torchvision"): lambda: torchvision_loader(root, False, workers, batch),
    }
    samples = {key: [] for key in cases}
    for _ in range(repeats):
        for key, make in cases.items():
            samples[key].append(measure(make, batch, batches))
    out: dict = {"train": {}, "eval": {}}
    for (phase, side), values in samples.items():
        out[phase][side] = {
            k: statistics.median(v[k] for v in values) for k in ("per_core", "wall")
        }
    return out


def main(argv=None) -> None:
    """Parse ``argv`` (default: sys.argv[1:]), run, print; the last line is the summary."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="ImageFolder root of JPEGs (default: a temporary set)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--per-class", type=int, default=16)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = a.data
        if root is None:
            root = os.path.join(tmp, "images")
            write_image_folder(root, a.classes, a.per_class)
        print(f"{len(list_images(root))} JPEGs in {root}; workers {a.workers}, batch {a.batch}")
        r = run(root, a.workers, a.batch, a.batches, a.repeats)
    for phase in ("train", "eval"):
        o, t = r[phase]["ours"], r[phase]["torchvision"]
        print(
            f"{phase}: ours {o['per_core']:.1f} img/s/core ({o['wall']:.1f} img/s wall), "
            f"torchvision {t['per_core']:.1f} img/s/core ({t['wall']:.1f} img/s wall), "
            f"ratio {o['per_core'] / t['per_core']:.2f}"
        )
    o, t = r["train"]["ours"]["per_core"], r["train"]["torchvision"]["per_core"]
    print(f"train pipeline: {o:.1f} img/s/core, torchvision: {t:.1f} img/s/core, ratio {o / t:.2f}")


if __name__ == "__main__":
    main()
