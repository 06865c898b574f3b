"""Training throughput of the full train loop (input pipeline + pmapped step) on TFDS mock data.

  python -m benchmarks.train_throughput [--width 16] [--base-width 8] [--steps 60] [--batch 128]

Prints steps/s and examples/s measured after the first logging window (which includes
compilation), for CIFAR-style ResNet-18 on 32x32x3 mock CIFAR-10 images.
"""

import argparse
import sys
import tempfile

import tensorflow_datasets as tfds

from widesparse_jax import platform

if "--default-xla" not in sys.argv:
    platform.enable_fast_cpu_convolutions()  # before JAX starts its CPU backend
from configs import cifar10  # noqa: E402
from widesparse_jax import metrics as metrics_lib  # noqa: E402
from widesparse_jax import train  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--base-width", type=int, default=None)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--window", type=int, default=10)
    p.add_argument("--default-xla", action="store_true", help="without the fast CPU conv flag")
    a = p.parse_args()
    c = cifar10.get_config()
    c.dataset.source = "tfds"
    c.model.width, c.model.base_width = a.width, a.base_width
    c.train.batch_size = a.batch
    c.train.eval_batch_size = a.batch
    c.train.num_train_steps = a.steps
    c.train.log_every_steps = a.window
    c.train.checkpoint_every_steps = 10**6
    with tempfile.TemporaryDirectory() as wd, tfds.testing.mock_data(num_examples=a.batch * 4):
        train.train_and_evaluate(c, wd)
        recs = [r for r in metrics_lib.read_metrics(wd) if r["kind"] == "train"][
            1:
        ]  # skip compile window
    eps = sorted(r["examples_per_sec"] for r in recs)
    med = eps[len(eps) // 2]
    kind = "dense" if a.base_width is None else f"sparse from base {a.base_width}"
    print(
        f"ResNet-18 CIFAR width {a.width} ({kind}), batch {a.batch}: "
        f"{med / a.batch:.2f} steps/s, {med:.0f} examples/s (median of {len(eps)} windows of {a.window} steps)"
    )


if __name__ == "__main__":
    main()
