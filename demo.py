"""Demo: a dense narrow MLP vs a sparse wide MLP with the same number of weights.

Trains on real Fashion-MNIST (read offline from the Debian package's IDX files, or
through TFDS when it is prepared) and prints both test accuracies:

  python demo.py [--epochs 5] [--narrow 64] [--wide 512] [--workdir DIR]

Both nets have exactly 784*narrow + narrow*10 counted weights; the wide one keeps them
with a random static mask (the paper's layer-wise distribution). The paper's claim: the
wider net is better at the same weight count.
"""

import argparse
import logging as pylogging
import os
import tempfile

from absl import logging

from widesparse_jax import platform

platform.enable_fast_cpu_convolutions()  # before JAX starts its CPU backend

from configs import fashion_mnist_mlp  # noqa: E402
from widesparse_jax import train  # noqa: E402


def run(width: int, base_width: int | None, epochs: int, workdir: str) -> dict:
    c = fashion_mnist_mlp.get_config()
    c.model.width = width
    c.model.base_width = base_width
    c.train.num_epochs = epochs
    c.train.log_every_steps = 600
    return train.train_and_evaluate(c, workdir)


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--narrow", type=int, default=64, help="width of the dense base net")
    p.add_argument("--wide", type=int, default=512, help="width of the sparse net")
    p.add_argument("--workdir", default=None, help="where runs go (default: a new temp dir)")
    args = p.parse_args()
    if args.wide < args.narrow:
        p.error(f"--wide={args.wide} must be >= --narrow={args.narrow}")
    pylogging.getLogger("absl").setLevel(pylogging.WARNING)
    logging.set_verbosity(logging.WARNING)
    root = args.workdir or tempfile.mkdtemp(prefix="widesparse_demo_")
    print(f"Fashion-MNIST, {args.epochs} epochs each; runs in {root}")
    dense = run(args.narrow, None, args.epochs, os.path.join(root, f"dense_w{args.narrow}"))
    print(
        f"dense  width {args.narrow:4d}: {dense['kept_weights']:7d} weights, "
        f"best test accuracy {dense['best_test_accuracy']:.2f}%  ({dense['wall_time_s']:.0f} s)"
    )
    sparse = run(args.wide, args.narrow, args.epochs, os.path.join(root, f"sparse_w{args.wide}"))
    print(
        f"sparse width {args.wide:4d}: {sparse['kept_weights']:7d} weights "
        f"(density {sparse['kept_weights'] / sparse['total_weights']:.3f}), "
        f"best test accuracy {sparse['best_test_accuracy']:.2f}%  ({sparse['wall_time_s']:.0f} s)"
    )
    diff = sparse["best_test_accuracy"] - dense["best_test_accuracy"]
    print(f"sparse-wide minus dense-narrow: {diff:+.2f} points at equal weight count")


if __name__ == "__main__":
    main()
