"""How a global batch is split over processes and local devices, and epoch arithmetic.

A global batch of G examples is cut into ``process_count`` contiguous local batches of
L = G / process_count rows (process p holds rows [p*L, (p+1)*L)), and each local batch into
``num_local_devices`` per-device batches of B = L / num_local_devices rows.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from widesparse_jax.data.spec import check_int


@dataclasses.dataclass(frozen=True)
class DeviceLayout:
    """This process's place in the job: its local device count, index and the process count."""

    num_local_devices: int = 1
    process_index: int = 0
    process_count: int = 1

    def __post_init__(self):
        object.__setattr__(
            self, "num_local_devices", check_int(self.num_local_devices, "num_local_devices", 1)
        )
        object.__setattr__(self, "process_count", check_int(self.process_count, "process_count", 1))
        object.__setattr__(self, "process_index", check_int(self.process_index, "process_index", 0))
        if self.process_index >= self.process_count:
            raise ValueError(
                f"process_index={self.process_index} must be < process_count={self.process_count}."
            )

    @classmethod
    def current(cls) -> DeviceLayout:
        """The layout JAX reports for this process."""
        import jax  # Lazy: the data package itself does not need jax.

        return cls(jax.local_device_count(), jax.process_index(), jax.process_count())

    @property
    def total_devices(self) -> int:
        return self.num_local_devices * self.process_count


@dataclasses.dataclass(frozen=True)
class BatchLayout:
    """A global batch size split over a DeviceLayout (divisibility checked by ``split_batch``)."""

    global_batch: int
    devices: DeviceLayout

    @property
    def local_batch(self) -> int:
        """Rows of each global batch held by this process."""
        return self.global_batch // self.devices.process_count

    @property
    def per_device(self) -> int:
        return self.local_batch // self.devices.num_local_devices

    @property
    def local_devices(self) -> int:
        return self.devices.num_local_devices

    @property
    def process_index(self) -> int:
        return self.devices.process_index

    @property
    def process_count(self) -> int:
        return self.devices.process_count

    def to_device_shape(self, x: np.ndarray) -> np.ndarray:
        """[L, ...] -> [local_devices, per_device, ...]."""
        return x.reshape((self.local_devices, self.per_device) + x.shape[1:])


def split_batch(global_batch_size: int, devices: DeviceLayout | None) -> BatchLayout:
    """The BatchLayout of a global batch over ``devices`` (None: ``DeviceLayout.current()``)."""
    devices = DeviceLayout.current() if devices is None else devices
    if not isinstance(devices, DeviceLayout):
        raise ValueError(f"devices must be a DeviceLayout or None, got {devices!r}.")
    global_batch_size = check_int(global_batch_size, "global_batch_size", 1)
    total = devices.total_devices
    if global_batch_size % total:
        raise ValueError(
            f"global batch size {global_batch_size} is not divisible by the total device count "
            f"{total} ({devices.process_count} process(es) x {devices.num_local_devices} local "
            "device(s))."
        )
    return BatchLayout(global_batch_size, devices)


def steps_per_epoch(num_train_examples: int, global_batch_size: int) -> int:
    """Full global batches per epoch (drop remainder). Raises if the batch exceeds the data."""
    num_train_examples = check_int(num_train_examples, "num_train_examples", 1)
    global_batch_size = check_int(global_batch_size, "global_batch_size", 1)
    if global_batch_size > num_train_examples:
        raise ValueError(
            f"global batch size {global_batch_size} exceeds the number of training "
            f"examples {num_train_examples}."
        )
    return num_train_examples // global_batch_size
