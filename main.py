"""Train a (wide sparse) network: ``python main.py --config=configs/cifar10.py --workdir=DIR``.

Every config field can be overridden, e.g. ``--config.model.width=128
--config.model.base_width=18``. Re-running with the same workdir resumes from its
latest checkpoint. Multi-host (GPU/TPU pods): start the same command on every host with
``--distributed`` (TPU / SLURM auto-detect) or with ``--coordinator_address=HOST:PORT
--num_processes=N --process_id=I``; the workdir must be shared by all hosts.
"""

import json
import logging as pylogging
import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and summaries.")
config_flags.DEFINE_config_file("config", None, "Training configuration file.", lock_config=True)
flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() with auto-detection (TPU pods, SLURM)."
)
flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0 (multi-host).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
flags.DEFINE_integer("process_id", None, "Index of this process (multi-host).")
flags.DEFINE_bool(
    "resume_diverged",
    False,
    "Resume a diverged workdir from its last finite checkpoint with a new --config.optimizer.lr "
    "(otherwise a changed lr is refused).",
)
flags.DEFINE_bool("verbose", False, "Show the full traceback of a refused run.")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(pylogging.Filter):
    """Drops INFO chatter of orbax/absl internals so progress lines stay readable."""

    def filter(self, record):
        return (
            record.levelno >= pylogging.WARNING
            or "widesparse_jax" in record.pathname
            or record.pathname.endswith("main.py")
        )


def _known_errors() -> tuple:
    """Errors that mean "this run is refused": one message, no traceback (unless --verbose)."""
    from widesparse_jax import config as config_lib
    from widesparse_jax.lock import WorkdirLockedError

    known = [config_lib.ConfigError, WorkdirLockedError, FloatingPointError]
    if "widesparse_jax.checkpoint" in sys.modules:
        known.append(sys.modules["widesparse_jax.checkpoint"].CheckpointMismatchError)
    return tuple(known)


def main(argv):
    try:
        _main(argv)
    except Exception as e:
        if FLAGS.verbose or not isinstance(e, _known_errors()):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def _main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_QuietLibraries())
    # Validate the whole config before anything is initialized, read or written.
    from widesparse_jax import config as config_lib

    config_lib.validate_config(FLAGS.config)

    from widesparse_jax import platform

    platform.enable_fast_cpu_convolutions()  # before JAX starts its CPU backend
    import jax

    from widesparse_jax import compile_cache

    compile_cache.enable()  # JAX persistent compilation cache (WIDESPARSE_JAX_CACHE_DIR)

    if FLAGS.coordinator_address:
        jax.distributed.initialize(
            coordinator_address=FLAGS.coordinator_address,
            num_processes=FLAGS.num_processes,
            process_id=FLAGS.process_id,
        )
    elif FLAGS.distributed:
        jax.distributed.initialize()
    logging.info(
        "JAX process %d/%d, local devices %s",
        jax.process_index(),
        jax.process_count(),
        jax.local_devices(),
    )

    from widesparse_jax import train

    summary = train.train_and_evaluate(
        FLAGS.config, FLAGS.workdir, resume_diverged=FLAGS.resume_diverged
    )
    if jax.process_index() == 0:
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    app.run(main)
