"""ImageNet preprocessing vs the baseline's torchvision transforms, on the same JPEGs.

The reference is the real torchvision 0.28.0 (``baseline.torchvision_ref``). Thresholds:
decoding is bit-exact (libjpeg's accurate IDCT on both sides); both outputs are uint8, but the
reference is quantized after each of PIL's two resize passes and ours once, after TF's one
pass, which gives a mean absolute difference of 0.13-0.19 (0-255 units; 0.31 while ours was
left float) and, in eval, a maximum of 1 (one uint8 step). A crop offset one pixel off, a size rounded
differently or TF's default fast IDCT each give >= ~0.9 (measured), hence the 0.25 bound.
"""

import io

import numpy as np
import pytest
from scipy import stats

from widesparse_jax.baseline import torchvision_ref as tvr
from widesparse_jax.data import imagenet, sources

MAD_BOUND = 0.25


@pytest.fixture(scope="module")
def tf():
    return sources.import_tf()[0]


@pytest.fixture(scope="module")
def jpegs():
    """JPEG bytes of ImageNet-like images: landscape, portrait (odd crop offset), gray, tiny."""
    from scripts import make_imagenet_like as mk

    rng = np.random.default_rng(0)
    shapes = [(375, 500, "rgb"), (507, 381, "rgb"), (333, 500, "gray"), (120, 90, "rgb")]
    return [mk.encode(mk.natural_image(rng, "n01440764", h, w), kind) for h, w, kind in shapes]


def _pil(image_bytes):
    from PIL import Image

    return Image.open(io.BytesIO(image_bytes)).convert("RGB")


def _hwc255(tensor) -> np.ndarray:
    return tensor.numpy().transpose(1, 2, 0) * 255.0


def test_decode_is_bit_exact_with_pil(tf, jpegs):
    for b in jpegs:
        ours = imagenet._decode_full(tf, tf.constant(b)).numpy()
        np.testing.assert_array_equal(ours, np.asarray(_pil(b)))


def test_eval_matches_resize_centercrop_totensor(tf, jpegs):
    ref = tvr.eval_transform(224, 256, normalize=False)
    for b in jpegs:
        ours = imagenet.eval_image(tf, tf.constant(b), 224).numpy()
        assert ours.dtype == np.uint8
        diff = np.abs(ours - _hwc255(ref(_pil(b))))
        assert diff.mean() < MAD_BOUND and diff.max() < 1.01, (diff.mean(), diff.max())


def test_resized_shape_and_offsets_follow_torchvision(tf):
    f = tvr.import_torchvision().transforms.functional
    for h, w in [(375, 500), (507, 381), (333, 500), (256, 257), (1000, 299)]:
        got = imagenet.resized_shape(tf, tf.constant([h, w]), 256).numpy().tolist()
        assert got == f._compute_resized_output_size((h, w), [256]), (h, w)


def test_train_crop_resize_matches_resized_crop(tf, jpegs):
    f = tvr.import_torchvision().transforms.functional
    for b, box in zip(jpegs, [(10, 33, 301, 257), (0, 0, 507, 381), (100, 7, 90, 120)]):
        ours = imagenet.crop_and_resize(tf, tf.constant(b), tf.constant(box), 224).numpy()
        assert ours.dtype == np.uint8
        ref = f.to_tensor(f.resized_crop(_pil(b), *box, [224, 224], antialias=True))
        diff = np.abs(ours - _hwc255(ref))
        assert diff.mean() < MAD_BOUND, (box, diff.mean())


# ----------------------------------------------------------------------------- crop sampler

N_DRAWS, KS_P = 3000, 0.01
SCALE, RATIO = imagenet.CROP_SCALE, imagenet.CROP_RATIO


def _features(boxes: np.ndarray, h: int, w: int) -> tuple:
    """(area fraction, log aspect ratio w/h) of int boxes [N, 4] = (top, left, h, w)."""
    return boxes[:, 2] * boxes[:, 3] / (h * w), np.log(boxes[:, 3] / boxes[:, 2])


def _ours(tf, h: int, w: int, seed: int) -> np.ndarray:
    def draw(i):
        key = tf.random.experimental.stateless_fold_in(tf.constant([seed, 0], tf.int64), i)
        return tf.stack(imagenet.sample_crop(tf, key, tf.constant(h), tf.constant(w)))

    ds = tf.data.Dataset.range(N_DRAWS).map(draw).batch(N_DRAWS)
    return next(iter(ds)).numpy()


def _tf_box_sampler(tf, h: int, w: int, seed: int) -> np.ndarray:
    """The replaced sampler (uniform aspect ratio, whole-image fallback): must be rejected."""

    def draw(i):
        key = tf.random.experimental.stateless_fold_in(tf.constant([seed, 0], tf.int64), i)
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.constant([h, w, 3]),
            tf.zeros([1, 0, 4]),
            seed=key,
            aspect_ratio_range=RATIO,
            area_range=SCALE,
            max_attempts=imagenet.CROP_TRIES,
            use_image_if_no_bounding_boxes=True,
        )
        return tf.stack([begin[0], begin[1], size[0], size[1]])

    ds = tf.data.Dataset.range(N_DRAWS).map(draw).batch(N_DRAWS)
    return next(iter(ds)).numpy()


def _torchvision(h: int, w: int, seed: int) -> np.ndarray:
    import torch

    torch.manual_seed(seed)
    return np.array([tvr.crop_params(h, w, SCALE, RATIO) for _ in range(N_DRAWS)])


def _ks_pvalues(a: np.ndarray, b: np.ndarray, h: int, w: int) -> list:
    fa, fb = _features(a, h, w), _features(b, h, w)
    return [stats.ks_2samp(x, y).pvalue for x, y in zip(fa, fb)]


@pytest.mark.parametrize("h,w", [(375, 500), (500, 120)])
def test_crop_distribution_matches_torchvision(tf, h, w):
    ref = _torchvision(h, w, seed=1)
    ours = _ours(tf, h, w, seed=2)
    assert min(_ks_pvalues(ours, ref, h, w)) > KS_P
    assert np.all((ours[:, :2] >= 0) & (ours[:, :2] + ours[:, 2:] <= [h, w]))
    # torchvision's fallback (all 10 tries fail): the centered box of the clamped ratio.
    fb_h, fb_w = (round(w / RATIO[0]), w) if w / h < RATIO[0] else (h, w)
    fallback = [(h - fb_h) // 2, 0, fb_h, fb_w]
    rates = [np.mean(np.all(x == fallback, axis=1)) for x in (ours, ref)]
    assert abs(rates[0] - rates[1]) < 0.03, rates


def test_uniform_ratio_sampler_is_rejected(tf):
    h, w = 375, 500
    ref = _torchvision(h, w, seed=1)
    wrong = _tf_box_sampler(tf, h, w, seed=2)
    assert _ks_pvalues(wrong, ref, h, w)[1] < KS_P  # the log-ratio distribution differs
