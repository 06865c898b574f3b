"""DatasetInfo: the facts about a dataset that the model, optimizer and schedule need."""

from __future__ import annotations

import dataclasses
from typing import Optional

from widesparse_jax.data import sources
from widesparse_jax.data.spec import NUM_CLASSES, DataSpec


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset.

    image_shape: (H, W, C) as the model sees it. num_train: examples trained on (the subset
    size with train_subset). num_test: examples of the 'test' split (ImageNet: 'validation').
    Either count is None when it is unknown (``static_info``).
    """

    name: str
    num_classes: int
    image_shape: tuple
    num_train: Optional[int]
    num_test: Optional[int]


def static_info(spec: DataSpec) -> DatasetInfo:
    """DatasetInfo from constants alone; reads no data (e.g. for restore templates).

    num_train is ``spec.train_subset`` (None without one); num_test is None.
    """
    return DatasetInfo(
        name=spec.name,
        num_classes=NUM_CLASSES[spec.name],
        image_shape=spec.image_shape,
        num_train=spec.train_subset,
        num_test=None,
    )


def dataset_info(spec: DataSpec) -> DatasetInfo:
    """Class count, model input shape (H, W, C) and split sizes of spec's dataset.

    Counts come from TFDS metadata, the IDX headers, or (mock/unprepared TFDS data) by reading
    the split's records. Raises ValueError if the data is missing or ``train_subset`` exceeds
    the training examples.
    """
    n_train, n_test = sources.split_sizes(spec)
    if spec.train_subset is not None:
        if spec.train_subset > n_train:
            raise ValueError(
                f"train_subset={spec.train_subset} exceeds the {n_train} training examples."
            )
        n_train = spec.train_subset
    return dataclasses.replace(static_info(spec), num_train=n_train, num_test=n_test)
