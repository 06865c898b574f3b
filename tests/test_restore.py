"""Reading a run's weights back from its workdir needs no dataset on the machine."""

import json

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import default as default_config
from widesparse_jax import data, restore, train


def test_load_variables_without_the_dataset(tmp_path):
    workdir = tmp_path / "run"
    empty = tmp_path / "no_data_here"
    empty.mkdir()
    c = default_config.get_config()
    c.dataset.name, c.dataset.source = "cifar10", "tfds"
    c.model.width, c.model.base_width = 4, 2
    c.model.parametrization, c.model.mup_base_width = "mup", 2
    c.train.batch_size = c.train.eval_batch_size = 16
    c.train.num_train_steps = 2
    with tfds.testing.mock_data(num_examples=32):
        train.train_and_evaluate(c, str(workdir))
        expected, expected_masks, _ = restore.load_variables(str(workdir))
    # The machine "loses" the data: config.json now points at an empty folder, where TFDS
    # finds nothing (reading the dataset facts from there fails), yet the weights load.
    cfg_path = workdir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["dataset"]["data_dir"] = str(empty)
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="not available"):
        data.dataset_info(data.DataSpec("cifar10", data_dir=str(empty), source="auto"))
    variables, masks, config = restore.load_variables(str(workdir))
    assert config.dataset.data_dir == str(empty)
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(variables)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(expected_masks), jax.tree.leaves(masks)):
        np.testing.assert_array_equal(a, b)
    assert set(variables) == {"params", "batch_stats"}
    assert variables["batch_stats"]["bn1"]["mean"].shape == (4,)
