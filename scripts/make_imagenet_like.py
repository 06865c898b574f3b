"""Write ImageNet-like archives in the real download's format, for the real TFDS builder.

    python scripts/make_imagenet_like.py --manual_dir=DIR [--num_val=50 --train_per_class=20]
    tfds build imagenet2012 --data_dir=DATA --manual_dir=DIR

Writes DIR/ILSVRC2012_img_train.tar (one ``<synset>.tar`` per class holding
``<synset>_<k>.JPEG``) and DIR/ILSVRC2012_img_val.tar (flat ``ILSVRC2012_val_%08d.JPEG``).
TFDS labels validation images by zipping the *sorted* names in the val tar with its bundled
50000-line validation_labels.txt, so a subset is labelled correctly exactly when it is the
first ``num_val`` validation images: that is what is written, and the train classes are the
synsets those labels name (plus the classes of the CMYK and PNG files TFDS converts by name).
Images: 1/f noise + a smooth field + ellipses, colour statistics per class (learnable),
sizes around 500x375 (scaled by --scale), JPEG quality 90; some grayscale, one CMYK JPEG and
one PNG saved as .JPEG under the names TFDS's builder fixes.
"""

from __future__ import annotations

import argparse
import io
import os
import tarfile

import numpy as np
from PIL import Image

CMYK_NAME = "n01739381_1309.JPEG"  # in TFDS's CMYK_IMAGES: converted to RGB when prepared
PNG_NAME = "n02105855_2933.JPEG"  # TFDS's PNG_IMAGES: a PNG named .JPEG, re-encoded


def validation_labels(n: int) -> list:
    """The synsets of the first n validation images (TFDS's bundled label file)."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.datasets.imagenet2012 import imagenet_common

    path = tfds.core.tfds_path(imagenet_common._VALIDATION_LABELS_FNAME)
    with open(os.fspath(path)) as f:
        return f.read().strip().splitlines()[:n]


def class_colour(synset: str) -> np.ndarray:
    """A per-class mean colour, float [3] on 0..255 (fixed by the synset id)."""
    rng = np.random.default_rng(int(synset[1:]))
    return rng.uniform(40, 215, size=3)


def natural_image(rng, synset: str, h: int, w: int) -> np.ndarray:
    """uint8 [h, w, 3]: 1/f noise + a low-frequency field + ellipses around the class colour."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    amp = 1.0 / np.maximum(np.sqrt(fy**2 + fx**2), 1.0 / max(h, w))
    spec = amp[..., None] * (
        rng.normal(size=(h, fx.shape[1], 3)) + 1j * rng.normal(size=(h, fx.shape[1], 3))
    )
    field = np.fft.irfft2(spec, s=(h, w), axes=(0, 1))
    field = field / (field.std() + 1e-8) * 30.0
    image = class_colour(synset)[None, None, :] + field
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(rng.integers(1, 5)):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(0.05, 0.3) * h, rng.uniform(0.05, 0.3) * w
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1.0
        image[inside] = 0.5 * image[inside] + 0.5 * rng.uniform(0, 255, size=3)
    return np.clip(image, 0, 255).astype(np.uint8)


def image_size(rng, scale: float) -> tuple:
    """(h, w) around 375x500, landscape mostly, some portrait."""
    w = int(rng.choice([500, 500, 500, 375, 333, 400, 640]) * rng.uniform(0.9, 1.1))
    h = int(w * rng.choice([0.75, 0.75, 0.667, 1.333, 1.0]))
    return max(16, int(h * scale)), max(16, int(w * scale))


def encode(array: np.ndarray, kind: str) -> bytes:
    """JPEG (q 90) bytes of an RGB array as 'rgb', 'gray', 'cmyk' JPEG or 'png'."""
    buf, image = io.BytesIO(), Image.fromarray(array)
    if kind == "gray":
        image = image.convert("L")
    elif kind == "cmyk":
        image = image.convert("CMYK")
    image.save(buf, format="PNG" if kind == "png" else "JPEG", quality=90)
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def _kind(rng, name: str) -> str:
    if name == CMYK_NAME:
        return "cmyk"
    if name == PNG_NAME:
        return "png"
    return "gray" if rng.uniform() < 0.03 else "rgb"


def write_train(path: str, synsets: list, per_class: int, rng, scale: float) -> int:
    """ILSVRC2012_img_train.tar: per-synset tars. Returns the number of images."""
    extra = {CMYK_NAME[:9]: CMYK_NAME, PNG_NAME[:9]: PNG_NAME}
    count = 0
    with tarfile.open(path, "w") as outer:
        for synset in sorted(set(synsets) | set(extra)):
            names = [f"{synset}_{k + 1}.JPEG" for k in range(per_class)]
            if synset in extra:
                names[0] = extra[synset]
            inner_buf = io.BytesIO()
            with tarfile.open(fileobj=inner_buf, mode="w") as inner:
                for name in names:
                    array = natural_image(rng, synset, *image_size(rng, scale))
                    _add(inner, name, encode(array, _kind(rng, name)))
            _add(outer, f"{synset}.tar", inner_buf.getvalue())
            count += len(names)
    return count


def write_val(path: str, labels: list, rng, scale: float) -> None:
    """ILSVRC2012_img_val.tar: flat ILSVRC2012_val_%08d.JPEG, image i of class labels[i-1]."""
    with tarfile.open(path, "w") as tar:
        for i, synset in enumerate(labels, start=1):
            array = natural_image(rng, synset, *image_size(rng, scale))
            _add(tar, f"ILSVRC2012_val_{i:08d}.JPEG", encode(array, _kind(rng, "")))


def make(manual_dir: str, num_val: int, train_per_class: int, scale: float, seed: int) -> dict:
    """Write both archives; returns {'train': n, 'validation': n, 'classes': [...]}."""
    os.makedirs(manual_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = validation_labels(num_val)
    n_train = write_train(
        os.path.join(manual_dir, "ILSVRC2012_img_train.tar"), labels, train_per_class, rng, scale
    )
    write_val(os.path.join(manual_dir, "ILSVRC2012_img_val.tar"), labels, rng, scale)
    classes = sorted(set(labels) | {CMYK_NAME[:9], PNG_NAME[:9]})
    return {"train": n_train, "validation": num_val, "classes": classes}


def prepare(manual_dir: str, data_dir: str) -> None:
    """Run the real TFDS imagenet2012 builder on manual_dir (offline)."""
    import tensorflow_datasets as tfds

    builder = tfds.builder("imagenet2012", data_dir=data_dir)
    config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    builder.download_and_prepare(download_config=config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manual_dir", required=True)
    parser.add_argument("--num_val", type=int, default=50)
    parser.add_argument("--train_per_class", type=int, default=20)
    parser.add_argument("--scale", type=float, default=1.0, help="image size factor")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data_dir", default=None, help="also prepare with TFDS into this dir")
    args = parser.parse_args()
    out = make(args.manual_dir, args.num_val, args.train_per_class, args.scale, args.seed)
    print(
        f"wrote {out['train']} train, {out['validation']} val images, {len(out['classes'])} classes"
    )
    if args.data_dir:
        prepare(args.manual_dir, args.data_dir)
        print(f"prepared imagenet2012 in {args.data_dir}")


if __name__ == "__main__":
    main()
