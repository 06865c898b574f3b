"""Run metrics: the JSONL + TensorBoard writer and the run's progress (best accuracy, sums).

``WORKDIR/metrics.jsonl`` holds one JSON record per log step (``kind: train``) and per
evaluation (``kind: epoch``); ``WORKDIR/tensorboard/`` the same values as TensorBoard
scalars (:class:`EventWriter`, TensorBoard's record format, no TensorFlow). Only process 0
writes.

:class:`RunProgress` is what a checkpoint must carry besides the train state so that a
resumed run reports exactly what an uninterrupted one would: the best test accuracy so far
and the running sums of the epoch and of the logging window in progress.

On resume from step s, records and TensorBoard events after s (the steps the run repeats)
are dropped from ``metrics.jsonl`` and from every event file, so each (tag, step) is
written once however often the run is killed.

Remote workdirs (``gs://...``): every file is read and written through etils.epath
(``widesparse_jax.paths``); an object store cannot append, so ``metrics.jsonl`` is rewritten
whole at each record (one object upload each: readers never see half a record), and event
files are written (:class:`EventWriter`) and read back for trimming through etils.epath too
(no TensorFlow needed).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import struct
import time
from typing import Any

import jax
from etils import epath

from widesparse_jax import paths

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
TENSORBOARD_DIR = "tensorboard"
_EVENTS = "events.out.tfevents"  # TensorBoard event file names start with it


@dataclasses.dataclass
class Sums:
    """Running float64 sums of per-step train loss and accuracy (fraction) over ``steps``."""

    loss: float = 0.0
    accuracy: float = 0.0
    steps: int = 0

    def add(self, loss: float, accuracy: float) -> None:
        self.loss += loss
        self.accuracy += accuracy
        self.steps += 1

    def reset(self) -> None:
        self.loss, self.accuracy, self.steps = 0.0, 0.0, 0

    def means(self) -> dict:
        """``{'train_loss', 'train_accuracy' (%)}`` of the steps summed so far (steps > 0)."""
        return {
            "train_loss": self.loss / self.steps,
            "train_accuracy": 100.0 * self.accuracy / self.steps,
        }


@dataclasses.dataclass
class RunProgress:
    """Best test accuracy (%) and the epoch at which it was reached; epoch and window sums."""

    best_test_accuracy: float | None = None
    best_epoch: float | None = None
    epoch: Sums = dataclasses.field(default_factory=Sums)
    window: Sums = dataclasses.field(default_factory=Sums)

    def add_step(self, loss: float, accuracy: float) -> None:
        self.epoch.add(loss, accuracy)
        self.window.add(loss, accuracy)

    def record_eval(self, test_accuracy: float, epoch: float) -> None:
        if self.best_test_accuracy is None or test_accuracy > self.best_test_accuracy:
            self.best_test_accuracy, self.best_epoch = test_accuracy, epoch

    def to_meta(self) -> dict:
        """JSON form stored in a checkpoint's ``meta`` item."""
        return {
            "best_test_accuracy": self.best_test_accuracy,
            "best_epoch": self.best_epoch,
            "epoch_sums": dataclasses.asdict(self.epoch),
            "window_sums": dataclasses.asdict(self.window),
        }

    @classmethod
    def from_meta(cls, meta: dict) -> RunProgress:
        return cls(
            best_test_accuracy=meta.get("best_test_accuracy"),
            best_epoch=meta.get("best_epoch"),
            epoch=Sums(**meta.get("epoch_sums", {})),
            window=Sums(**meta.get("window_sums", {})),
        )


class MetricsLog:
    """Writes metrics as JSONL (process 0 only) and TensorBoard scalars (:class:`EventWriter`)."""

    def __init__(self, workdir: str, resume_step: int):
        self.enabled = jax.process_index() == 0
        self.path = os.fspath(paths.path(workdir, METRICS_FILE))
        self.writer = None
        self._lines = None if not paths.is_remote(workdir) else []  # remote: the whole file
        if not self.enabled:
            return
        # Drop records written after the checkpoint we resume from (the run repeats them).
        if epath.Path(self.path).exists():
            with epath.Path(self.path).open() as f:
                kept = [
                    line for line in f if line.strip() and json.loads(line)["step"] <= resume_step
                ]
            with epath.Path(self.path).open("w") as f:
                f.writelines(kept)
            self._lines = None if self._lines is None else kept
        trim_event_files(os.fspath(paths.path(workdir, TENSORBOARD_DIR)), resume_step)
        self.writer = EventWriter(os.fspath(paths.path(workdir, TENSORBOARD_DIR)))

    def write(self, kind: str, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        line = json.dumps({"kind": kind, "step": int(step), **values}, sort_keys=True) + "\n"
        if self._lines is None:
            with epath.Path(self.path).open("a") as f:
                f.write(line)
        else:  # an object store cannot append: upload the whole file again
            self._lines.append(line)
            epath.Path(self.path).write_text("".join(self._lines))
        scalars = {
            f"{kind}/{k}": v
            for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        self.writer.write_scalars(int(step), scalars)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class EventWriter:
    """TensorBoard scalars in a new event file of this session under ``logdir``.

    Written with TensorBoard's own record format (``RecordWriter``) through etils.epath, so
    no TensorFlow is imported (a Fashion-MNIST run on IDX files starts ~2.5 s sooner than
    with the TF summary writer clu uses) and a ``gs://`` logdir works like a local one. Each write
    is flushed: a kill loses no record before the last one (a cut record is trimmed on
    resume, :func:`trim_event_files`).
    """

    def __init__(self, logdir: str):
        from tensorboard.summary.writer.record_writer import RecordWriter

        root = epath.Path(logdir)
        root.mkdir(parents=True, exist_ok=True)
        stem = f"{_EVENTS}.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
        n = 0
        while (root / f"{stem}.{n}.v2").exists():
            n += 1
        self._file = (root / f"{stem}.{n}.v2").open("wb")
        self._records = RecordWriter(self._file)
        self._write(wall_time=time.time(), file_version="brain.Event:2")

    def _write(self, **event_fields) -> None:
        from tensorboard.compat.proto import event_pb2

        self._records.write(event_pb2.Event(**event_fields).SerializeToString())
        self._file.flush()

    def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
        """One event at ``step`` with a ``simple_value`` per tag."""
        from tensorboard.compat.proto import summary_pb2

        values = [
            summary_pb2.Summary.Value(tag=k, simple_value=float(v)) for k, v in scalars.items()
        ]
        self._write(
            wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=values)
        )

    def close(self) -> None:
        self._file.close()


def _event_files(logdir: str) -> list[str]:
    if not epath.Path(logdir).is_dir():
        return []
    names = (p.name for p in epath.Path(logdir).iterdir())
    return sorted(os.fspath(paths.path(logdir, n)) for n in names if n.startswith(_EVENTS))


def _load_records(path: str) -> list[bytes]:
    """The readable records of the event file ``path`` (TFRecord framing: uint64 length,
    its masked crc32c, the data, its masked crc32c), read through etils.epath without
    TensorFlow. Reading stops at the first record cut short or failing its checksum (a
    kill during a write), as TensorBoard's own loader does."""
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    raw = epath.Path(path).read_bytes()
    out, at = [], 0
    while at + 12 <= len(raw):
        header = raw[at : at + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", raw[at + 8 : at + 12])
        end = at + 12 + length
        if header_crc != masked_crc32c(header) or end + 4 > len(raw):
            break
        data = raw[at + 12 : end]
        if struct.unpack("<I", raw[end : end + 4])[0] != masked_crc32c(data):
            break
        out.append(data)
        at = end + 4
    return out


def trim_event_files(logdir: str, max_step: int) -> int:
    """Drops every summary event with step > ``max_step`` from the event files in ``logdir``.

    Each changed file is rewritten atomically (temp file + rename, ``widesparse_jax.paths``);
    a record cut short by a kill ends the file's readable part. Returns the number of events
    dropped.
    """
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    dropped = 0
    for path in _event_files(logdir):
        records = _load_records(path)
        kept = [
            r
            for r in records
            if not (
                (e := event_pb2.Event.FromString(r)).WhichOneof("what") == "summary"
                and e.step > max_step
            )
        ]
        if len(kept) == len(records) and paths.size(path) == _records_size(records):
            continue
        dropped += len(records) - len(kept)
        tmp = epath.Path(path + ".tmp")
        with tmp.open("wb") as f:
            writer = RecordWriter(f)
            for r in kept:
                writer.write(r)
            writer.flush()
        tmp.replace(path)
    return dropped


def _records_size(records: list[bytes]) -> int:
    """Bytes of ``records`` as TFRecords (8 length + 4 crc + data + 4 crc each)."""
    return sum(16 + len(r) for r in records)


def read_event_scalars(workdir: str) -> list[tuple[str, int]]:
    """``(tag, step)`` of every summary value in the run's TensorBoard event files."""
    from tensorboard.compat.proto import event_pb2

    out = []
    for path in _event_files(os.fspath(paths.path(workdir, TENSORBOARD_DIR))):
        for r in _load_records(path):
            e = event_pb2.Event.FromString(r)
            out.extend((v.tag, int(e.step)) for v in e.summary.value)
    return out


def read_metrics(workdir: str) -> list[dict]:
    """The records of ``metrics.jsonl`` in ``workdir`` (train, epoch and final records)."""
    with paths.path(workdir, METRICS_FILE).open() as f:
        return [json.loads(line) for line in f if line.strip()]


def last_epoch_record(workdir: str) -> dict:
    """The newest ``kind: epoch`` record of ``workdir`` ({} when there is none)."""
    if not paths.path(workdir, METRICS_FILE).exists():
        return {}
    epochs = [r for r in read_metrics(workdir) if r["kind"] == "epoch"]
    return epochs[-1] if epochs else {}


def write_summary(workdir: str, summary: dict) -> None:
    with paths.path(workdir, SUMMARY_FILE).open("w") as f:
        json.dump(summary, f, indent=2)
