"""Start-up: time from ``python main.py ...`` to the first finished train step, and how much of
it is XLA compilation, for a first launch (empty persistent compilation cache) and a second
launch of the same run (the cache filled by the first).

  python -m benchmarks.startup [--models cifar,imagenet] [--width 64] [--batch 16]
  python -m benchmarks.startup --imagenet-data-dir D   # prepared ImageNet(-like) TFDS data

Each launch is a fresh process with a fresh workdir and ``WIDESPARSE_JAX_CACHE_DIR`` pointing
at one temporary cache per model, running 1 train step of ResNet-18 (CIFAR stem on 32x32
CIFAR-10, ImageNet stem on 224x224 ImageNet). Without prepared data the launches read
``tfds.testing.mock_data`` (random images of the real shapes; the model, the step and its
compilation are the real ones). The figures come from each run's ``summary.json``
(``first_step_s``, ``first_step_compile_s``, ``first_step_compile_cache_hits``, written by the
train loop) beside the wall time of the whole process. Last line:
``second launch compile: cifar X% of the first, imagenet Y%``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {"cifar": "configs/cifar10.py", "imagenet": "configs/imagenet.py"}


def _child(argv: list, mock_examples: int) -> int:
    """``main.py ARGV`` in this process, inside TFDS mock data when ``mock_examples`` > 0."""
    sys.path.insert(0, ROOT)
    import main  # pylint: disable=g-import-not-at-top

    if mock_examples <= 0:
        return main.run(["main.py", *argv])
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    with tfds.testing.mock_data(num_examples=mock_examples):
        return main.run(["main.py", *argv])


def launch(model: str, width: int, batch: int, workdir: str, cache: str, data_dir) -> dict:
    """One launch in a fresh process; its summary's start-up fields and the process wall time."""
    argv = [
        f"--config={CONFIGS[model]}",
        f"--workdir={workdir}",
        f"--config.model.width={width}",
        f"--config.train.batch_size={batch}",
        f"--config.train.eval_batch_size={batch}",
        "--config.train.num_train_steps=1",
        "--config.train.log_every_steps=1",
    ]
    mock = 0
    if model == "imagenet" and data_dir:
        argv.append(f"--config.dataset.data_dir={data_dir}")
    else:
        argv.append("--config.dataset.source=tfds")
        mock = 2 * batch
    cmd = [sys.executable, "-m", "benchmarks.startup", "--child", str(mock), "--", *argv]
    env = {**os.environ, "WIDESPARSE_JAX_CACHE_DIR": cache}
    t0 = time.time()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    if p.returncode != 0:
        raise SystemExit(f"{model} launch failed ({p.returncode}):\n{p.stderr[-3000:]}")
    with open(os.path.join(workdir, "summary.json")) as f:
        s = json.load(f)
    keys = ("first_step_s", "first_step_compile_s", "first_step_compile_cache_hits", "compile_s")
    return {**{k: s[k] for k in keys}, "process_wall_s": wall}


def _megabytes(folder: str) -> float:
    return sum(e.stat().st_size for e in os.scandir(folder) if e.is_file()) / 2**20


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) > 1 and argv[0] == "--child":
        sys.exit(_child(argv[3:], int(argv[1])))
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="cifar,imagenet")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--imagenet-data-dir", default=None, help="prepared TFDS data (else mock)")
    a = p.parse_args(argv)
    models = a.models.split(",")
    bad = [m for m in models if m not in CONFIGS]
    if bad:
        raise SystemExit(f"--models: unknown {bad}; allowed: {sorted(CONFIGS)}")
    ratios = {}
    head = "model     launch  first step s  compile s (to step 1)  cache hits  process wall s  cache MB"
    print(head)
    with tempfile.TemporaryDirectory() as tmp:
        for m in models:
            cache = os.path.join(tmp, f"cache_{m}")
            runs = []
            for i in (1, 2):
                wd = os.path.join(tmp, f"{m}{i}")
                r = launch(m, a.width, a.batch, wd, cache, a.imagenet_data_dir)
                runs.append(r)
                print(
                    f"{m:9s} {i:6d}  {r['first_step_s']:12.1f}  {r['first_step_compile_s']:21.1f}"
                    f"  {r['first_step_compile_cache_hits']:10d}  {r['process_wall_s']:14.1f}"
                    f"  {_megabytes(cache):8.1f}"
                )
            first, second = (r["first_step_compile_s"] for r in runs)
            ratios[m] = 100.0 * second / max(first, 1e-9)
    print(
        "second launch compile: "
        + ", ".join(f"{m} {v:.0f}% of the first" for m, v in ratios.items())
    )


if __name__ == "__main__":
    main()
