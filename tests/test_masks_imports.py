"""``import widesparse_jax.masks`` stays light: no Flax, TensorFlow, TFDS or torch."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
HEAVY = ("flax", "tensorflow", "tensorflow_datasets", "torch", "ml_collections")
# the core install (no extras) has none of these: models and optim must not need them
TRAIN_ONLY = ("tensorflow", "tensorflow_datasets", "torch", "ml_collections", "orbax", "clu")

_PROBE = """
import sys
import widesparse_jax.masks, widesparse_jax.tree
from widesparse_jax.sparsity import counted, distributions, draw, order, plan, report
heavy = {heavy!r}
print(sorted(m for m in sys.modules if m.split(".")[0] in heavy))
print(widesparse_jax.masks.__file__)
"""


def test_masks_imports_no_flax_tf_tfds_torch():
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    loaded, path = proc.stdout.splitlines()[-2:]
    assert loaded == "[]", f"importing widesparse_jax.masks loaded {loaded}"
    assert path == str(ROOT / "widesparse_jax" / "masks" / "__init__.py")


_PROBE_CORE = """
import sys
import widesparse_jax.models, widesparse_jax.optim
heavy = {heavy!r}
print(sorted(m for m in sys.modules if m.split(".")[0] in heavy))
"""


def test_models_and_optim_import_no_training_extras():
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE_CORE.format(heavy=TRAIN_ONLY)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    loaded = proc.stdout.splitlines()[-1]
    assert loaded == "[]", f"importing widesparse_jax.models/optim loaded {loaded}"


_PROBE_EVENTS = """
import sys
from widesparse_jax import metrics
w = metrics.EventWriter({logdir!r})
w.write_scalars(3, {{"train/loss": 0.5}})
w.close()
print(metrics.read_event_scalars({workdir!r}))
print(sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow"))
"""


def test_tensorboard_events_are_written_without_tensorflow(tmp_path):
    """A run's metrics (JSONL + TensorBoard) need no TensorFlow: ~2.5 s of every launch."""
    code = _PROBE_EVENTS.format(logdir=str(tmp_path / "tensorboard"), workdir=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    scalars, loaded = proc.stdout.splitlines()[-2:]
    assert scalars == "[('train/loss', 3)]"
    assert loaded == "[]", f"writing TensorBoard events loaded {loaded[:80]}"
