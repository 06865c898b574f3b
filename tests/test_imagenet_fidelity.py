"""ImageNet preprocessing vs the baseline's torchvision transforms, on the same JPEGs.

The reference is the real torchvision 0.28.0 (``baseline.torchvision_ref``) on Pillow. Both
stages are exact: decoding (libjpeg's accurate IDCT, as PIL; the fused decode-and-crop gives
the full decode's pixels) and the resize (``data.pil_resize``: Pillow's fixed-point bilinear
resample, bit for bit). So the uint8 images equal torchvision's before ``ToTensor``, in eval
and for a given train crop box; the crop boxes themselves are random on both sides and are
compared as distributions (below).
"""

import io

import numpy as np
import pytest
from scipy import stats

from widesparse_jax.baseline import torchvision_ref as tvr
from widesparse_jax.data import imagenet, pil_resize, sources


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


def _uint8(tensor) -> np.ndarray:
    """torchvision's ToTensor output [C, H, W] in 0..1 back to the uint8 image [H, W, C]."""
    return np.round(tensor.numpy().transpose(1, 2, 0) * 255.0).astype(np.uint8)


def test_decode_is_bit_exact_with_pil(tf, jpegs):
    for b in jpegs:
        ours = imagenet._decode_full(tf, tf.constant(b)).numpy()
        np.testing.assert_array_equal(ours, np.asarray(_pil(b)))


def test_decode_and_crop_equals_the_full_decode(tf, jpegs):
    """Boxes at and off 16-pixel (iMCU) columns, at the image edges, 1-pixel wide."""
    for b in jpegs:
        full = imagenet._decode_full(tf, tf.constant(b)).numpy()
        h, w = full.shape[:2]
        for oy, ox, ch, cw in [(5, 16, 50, 32), (0, 0, h, w), (3, 7, 40, 41), (h - 9, w - 1, 9, 1),
                               (1, 32, 20, w - 32), (0, w // 2, h, 17)]:  # fmt: skip
            box = tf.constant([oy, ox, ch, cw])
            got = imagenet._decode_and_crop_jpeg(tf, tf.constant(b), box).numpy()
            np.testing.assert_array_equal(got, full[oy : oy + ch, ox : ox + cw], str((oy, ox)))


def test_eval_equals_resize_centercrop(tf, jpegs):
    ref = tvr.eval_transform(224, 256, normalize=False)
    for b in jpegs:
        ours = imagenet.eval_image(tf, tf.constant(b), 224).numpy()
        assert ours.dtype == np.uint8
        np.testing.assert_array_equal(ours, _uint8(ref(_pil(b))))


def test_resized_shape_and_offsets_follow_torchvision(tf):
    f = tvr.import_torchvision().transforms.functional
    for h, w in [(375, 500), (507, 381), (333, 500), (256, 257), (1000, 299)]:
        got = imagenet.resized_shape(tf, tf.constant([h, w]), 256).numpy().tolist()
        assert got == f._compute_resized_output_size((h, w), [256]), (h, w)


def test_train_crop_resize_equals_resized_crop(tf, jpegs):
    f = tvr.import_torchvision().transforms.functional
    for b, box in zip(jpegs, [(10, 33, 301, 257), (0, 0, 507, 381), (100, 7, 90, 120)]):
        ours = imagenet.crop_and_resize(tf, tf.constant(b), tf.constant(box), 224).numpy()
        ref = f.to_tensor(f.resized_crop(_pil(b), *box, [224, 224], antialias=True))
        np.testing.assert_array_equal(ours, _uint8(ref), str(box))


# ----------------------------------------------------------------------------- the resize op


def _pil_resize(a: np.ndarray, hw: tuple, order: str = "pillow") -> np.ndarray:
    """PIL's resize of uint8 [H, W, C]; order 'h'/'v': that 1-D pass first, as two PIL calls
    (each resizes one axis: one pass, rounded to uint8, like the intermediate of one call)."""
    from PIL import Image

    def pil(x, h, w):
        im = Image.fromarray(x[..., 0]) if x.shape[2] == 1 else Image.fromarray(x)
        return np.asarray(im.resize((w, h), Image.BILINEAR)).reshape(h, w, x.shape[2])

    if order == "h":
        return pil(pil(a, a.shape[0], hw[1]), *hw)
    if order == "v":
        return pil(pil(a, hw[0], a.shape[1]), *hw)
    return pil(a, *hw)


def test_resize_op_is_pillow_bit_for_bit(tf):
    """Random sizes, up and down, gray and RGB, smooth and noisy pixels; both pass orders."""
    rng = np.random.default_rng(0)
    for t in range(40):
        h, w = (int(v) for v in rng.integers(1, 400, 2))
        hw = tuple(int(v) for v in rng.integers(1, 300, 2))
        a = rng.integers(0, 256, (h, w, 1 if t % 4 == 0 else 3)).astype(np.uint8)
        if t % 2:
            a = np.cumsum(a, axis=1, dtype=np.uint8)  # smoother (wrapping) ramps
        got = pil_resize.resize(tf, a, hw).numpy()
        np.testing.assert_array_equal(got, _pil_resize(a, hw), str((a.shape, hw)))
        legacy = pil_resize.resize(tf, a, hw, legacy_pass_order=True).numpy()
        np.testing.assert_array_equal(legacy, _pil_resize(a, hw, "h"), str((a.shape, hw)))


def test_resize_op_pass_order(tf):
    """Pillow >= 13 resamples vertically first when the height shrinks by more than twice as
    many pixels as the width; the two orders then differ (by one step in some pixels)."""
    a = np.random.default_rng(1).integers(0, 256, (428, 64, 3)).astype(np.uint8)
    got = pil_resize.resize(tf, a, (224, 224)).numpy()  # 204 rows fewer, 160 columns more
    np.testing.assert_array_equal(got, _pil_resize(a, (224, 224), "v"))
    assert np.any(got != _pil_resize(a, (224, 224), "h"))
    got = pil_resize.resize(tf, a, (400, 20)).numpy()  # 28 rows fewer, 44 columns fewer
    np.testing.assert_array_equal(got, _pil_resize(a, (400, 20), "h"))
    assert np.any(got != _pil_resize(a, (400, 20), "v"))


def test_resize_op_refuses_bad_shapes(tf):
    with pytest.raises(tf.errors.InvalidArgumentError, match="must be \\[height, width"):
        pil_resize.resize(tf, np.zeros((4, 4), np.uint8), (2, 2))
    with pytest.raises(tf.errors.InvalidArgumentError, match="size must be positive"):
        pil_resize.resize(tf, np.zeros((4, 4, 3), np.uint8), (0, 2))


def test_build_without_a_compiler_is_one_clear_error(tf, tmp_path):
    env = {"CXX": "no-such-compiler-xyz", pil_resize.ENV: str(tmp_path / "ops")}
    with pytest.raises(pil_resize.BuildError, match="'no-such-compiler-xyz' was not found"):
        pil_resize.build(tf, env)
    assert not (tmp_path / "ops").exists() or not any((tmp_path / "ops").iterdir())


def test_library_path_follows_source_and_location(tf, tmp_path):
    env = {pil_resize.ENV: str(tmp_path)}
    path = pil_resize.library_path(tf, env)
    assert path.startswith(str(tmp_path)) and f"tf{tf.__version__}" in path
    assert pil_resize.library_path(tf, {**env, "CXX": "clang++"}) != path
    home = {"XDG_CACHE_HOME": str(tmp_path / "c")}
    assert pil_resize.ops_dir(home) == str(tmp_path / "c" / "widesparse_jax" / "ops")


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
