"""Train a (wide sparse) network: ``python main.py --config=configs/cifar10.py --workdir=DIR``.

Every config field can be overridden, e.g. ``--config.model.width=128
--config.model.base_width=18``. Re-running with the same workdir resumes from its
latest checkpoint. Multi-host (GPU/TPU pods): start the same command on every host with
``--distributed`` (TPU / SLURM auto-detect) or with ``--coordinator_address=HOST:PORT
--num_processes=N --process_id=I``; the workdir must be shared by all hosts.
"""

import json
import logging as pylogging
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags


def define_flags(fv: flags.FlagValues, argv: list) -> None:
    """Defines main's flags on ``fv``; ``--config.x=v`` overrides are read from ``argv``."""
    flags.DEFINE_string(
        "workdir", None, "Directory for checkpoints, metrics and summaries.", flag_values=fv
    )
    config_flags.DEFINE_config_file(
        "config", None, "Training configuration file.", fv, lock_config=True, sys_argv=argv
    )
    flags.DEFINE_bool(
        "distributed",
        False,
        "Call jax.distributed.initialize() with auto-detection (TPU pods, SLURM).",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "coordinator_address", None, "HOST:PORT of process 0 (multi-host).", flag_values=fv
    )
    flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).", flag_values=fv)
    flags.DEFINE_integer("process_id", None, "Index of this process (multi-host).", flag_values=fv)
    flags.DEFINE_bool(
        "resume_diverged",
        False,
        "Resume a diverged workdir from its last finite checkpoint with a new "
        "--config.optimizer.lr (otherwise a changed lr is refused).",
        flag_values=fv,
    )
    flags.DEFINE_bool("verbose", False, "Show the full traceback of a refused run.", flag_values=fv)
    flags.mark_flags_as_required(["config", "workdir"], flag_values=fv)


FLAGS = flags.FLAGS
define_flags(FLAGS, sys.argv)


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


def main(argv, fv: flags.FlagValues = FLAGS):
    try:
        _main(argv, fv)
    except Exception as e:
        if fv.verbose or not isinstance(e, _known_errors()):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def _flag_error_message(e: BaseException, argv: list) -> str:
    """One line for a command line absl/ml_collections could not parse (config file, typo)."""
    root = e
    while root.__cause__ is not None or (root.__context__ is not None and not str(root)):
        root = root.__cause__ or root.__context__
    config = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if isinstance(root, SyntaxError):
        return f"config file {root.filename} line {root.lineno}: {root.msg}"
    if isinstance(root, OSError) and "config file" in str(root):
        return f"--config={config}: cannot load the config file (no such file, or unreadable)"
    if isinstance(root, (AttributeError, KeyError)):
        text = re.sub(r"[\\'\"]|\\n", " ", str(root)).split()
        field = text[0] if text else "?"
        flag = next((a for a in argv if a.startswith("--config.") and field in a), "--config.?")
        hint = re.search(r"Did you mean (\S+) instead", " ".join(text))
        hint = f"; did you mean {hint.group(1)}?" if hint else ""
        return (
            f"{flag}: unknown config field {field!r}{hint} (configs/default.py lists every field)"
        )
    text = " ".join(str(root).split()) or type(root).__name__
    bad_value = re.match(r"flag --(config\.[\w.]+)=(\S*): (.*)", text)
    if bad_value:
        field, value, why = bad_value.groups()
        kind = " an integer" if "for int()" in why else f" ({why})"
        return f"{field}={value} is not allowed:{kind} (the type of the field in the config file)"
    return text


def _parse(fv: flags.FlagValues, argv: list) -> list:
    """Parses ``argv`` into ``fv``; a bad command line is one line on stderr and exit 2."""
    try:
        rest = fv(argv)
        "dataset" in fv.config  # noqa: B015 - loads the config file now (missing file raises)
        return rest
    except Exception as e:  # noqa: BLE001 - the config file's own errors arrive as any type
        if "--verbose" in argv:
            raise
        print(f"error: {_flag_error_message(e, argv)}", file=sys.stderr)
        sys.exit(2)


def parse_flags(argv: list) -> list:
    """``app.run``'s flag parser (see :func:`_parse`)."""
    return _parse(FLAGS, argv)


def run(argv: list) -> int:
    """Runs like ``python main.py ARGV...`` in this process; returns the exit code.

    Fresh flags per call (the config overrides are defined from ``argv``), so tests can call
    it repeatedly.
    """
    fv = flags.FlagValues()
    define_flags(fv, argv)
    try:
        main(_parse(fv, argv), fv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


def _main(argv, fv: flags.FlagValues):
    if len(argv) > 1:
        raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_QuietLibraries())
    # Validate the whole config before anything is initialized, read or written.
    from widesparse_jax import config as config_lib

    config_lib.validate_config(fv.config)

    from widesparse_jax import platform

    platform.enable_fast_cpu_convolutions()  # before JAX starts its CPU backend
    import jax

    from widesparse_jax import compile_cache

    compile_cache.enable()  # JAX persistent compilation cache (WIDESPARSE_JAX_CACHE_DIR)

    if fv.coordinator_address:
        jax.distributed.initialize(
            coordinator_address=fv.coordinator_address,
            num_processes=fv.num_processes,
            process_id=fv.process_id,
        )
    elif fv.distributed:
        jax.distributed.initialize()
    logging.info(
        "JAX process %d/%d, local devices %s",
        jax.process_index(),
        jax.process_count(),
        jax.local_devices(),
    )

    from widesparse_jax import train

    summary = train.train_and_evaluate(fv.config, fv.workdir, resume_diverged=fv.resume_diverged)
    if jax.process_index() == 0:
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
