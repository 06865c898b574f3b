"""ImageNet path on real files: the missing-data message, ImageNet-like archives, TFDS prepare."""

import pytest

from widesparse_jax import data
from widesparse_jax.data import sources


def test_unprepared_imagenet_is_one_clear_message(tmp_path):
    spec = data.DataSpec("imagenet2012", source="tfds", data_dir=str(tmp_path))
    with pytest.raises(ValueError) as err:
        data.dataset_info(spec)
    msg = str(err.value)
    manual = str(tmp_path / "downloads" / "manual")
    assert "ILSVRC2012_img_train.tar" in msg and "ILSVRC2012_img_val.tar" in msg
    assert f"tfds build imagenet2012 --data_dir={tmp_path} --manual_dir={manual}" in msg
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert sources.MANUAL_DOWNLOAD == ("imagenet2012",)
