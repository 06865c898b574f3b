"""Remote workdirs (gs://): everything lands in the bucket, nothing in a local "gs:" folder.

No network: ``gs://bucket/...`` is mapped onto a local folder at the libraries' seams
(:func:`gs_on_disk`): etils.epath (``etils.epath.testing.mock_epath``, which our code and
orbax's directory handling go through), orbax's GCS kvstore spec for TensorStore (the array
data: a ``file`` kvstore on the mapped folder instead of the ``gcs`` driver) and orbax's
bucket probe (hierarchical namespace: no). Our own code runs unchanged (TensorBoard event
files included: written through epath).
"""

import contextlib
import importlib.machinery
import os
import socket
import sys
import types
from pathlib import Path
from unittest import mock

import jax
import numpy as np
import pytest
from etils.epath import gpath
from etils.epath import testing as epath_testing

import main
from tests.markers import needs_fmnist
from tests.test_train import small_mlp_config
from widesparse_jax import checkpoint as ckpt_lib
from widesparse_jax import integrity, preflight, restore, train
from widesparse_jax import lock as lock_lib
from widesparse_jax import metrics as metrics_lib
from widesparse_jax.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def gs_on_disk(root: Path, storage_client: bool = True):
    """``gs://B/P`` is ``root/B/P`` for epath and orbax (TensorStore).

    ``storage_client``: whether ``google.cloud.storage`` (orbax's GCS client, whose only use
    here, the bucket probe, is replaced) counts as installed.
    """
    from orbax.checkpoint._src.path import gcs_utils

    root = str(root)

    def local(p):
        p = os.fspath(p)
        return os.path.join(root, p[len("gs://") :]) if p.startswith("gs://") else p

    def uri(p):
        p = os.fspath(p)
        return "gs://" + os.path.relpath(p, root) if p.startswith(root + os.sep) else p

    def one(fn, p, *a, **k):
        return fn(local(p), *a, **k)

    def two(fn, p, dst, *a, **k):
        return fn(local(p), local(dst), *a, **k)

    def walk(fn, top, **k):
        for parent, dirs, files in fn(local(top), **k):
            yield uri(parent), dirs, files

    def glob(fn, p):
        return [uri(x) for x in fn(local(p))]

    storage = None  # sys.modules[name] = None: "not installed"
    if storage_client:
        storage = types.ModuleType("google.cloud.storage")
        storage.__spec__ = importlib.machinery.ModuleSpec("google.cloud.storage", None)
    fns = dict(open=one, exists=one, isdir=one, listdir=one, makedirs=one, mkdir=one)
    fns.update(remove=one, rmtree=one, stat=one, rename=two, replace=two, copy=two)
    with contextlib.ExitStack() as stack:
        # epath's backend for gs:// (not tf.io.gfile, which mock_epath does not replace).
        stack.enter_context(mock.patch.object(gpath, "_is_tf_installed", lambda: False))
        stack.callback(_set_module, _CLIENT, sys.modules.get(_CLIENT, _ABSENT))
        _set_module(_CLIENT, storage)
        stack.enter_context(epath_testing.mock_epath(walk=walk, glob=glob, **fns))
        kvstore = lambda p: {"driver": "file", "path": local(p)}  # noqa: E731
        stack.enter_context(mock.patch.object(gcs_utils, "get_kvstore_for_gcs", kvstore))
        no_hns = lambda p: False  # noqa: E731
        stack.enter_context(
            mock.patch.object(gcs_utils, "is_hierarchical_namespace_enabled", no_hns)
        )
        yield


_CLIENT, _ABSENT = "google.cloud.storage", object()


def _set_module(name, module):
    if module is _ABSENT:
        sys.modules.pop(name, None)
    else:
        sys.modules[name] = module


def _no_local_gs_folder(*dirs):
    for d in (Path.cwd(), ROOT, *dirs):
        assert not (Path(d) / "gs:").exists(), f"a local 'gs:' folder appeared in {d}"


def _largest_file(directory: Path) -> Path:
    return max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _without_timing(records):
    drop = ("examples_per_sec", "input_wait_fraction")
    return [{k: v for k, v in r.items() if k not in drop} for r in records]


@needs_fmnist
def test_gs_workdir_lands_in_the_bucket_and_resumes_exactly(tmp_path, monkeypatch):
    monkeypatch.setattr(lock_lib, "REMOTE_SETTLE_S", 0.05)  # the store here is local
    monkeypatch.chdir(tmp_path)
    bucket, wd = tmp_path / "store", "gs://bucket/run"
    run_dir = bucket / "bucket" / "run"
    config = small_mlp_config(num_train_steps=40)
    with gs_on_disk(bucket):
        summary = train.train_and_evaluate(config, wd)
        assert summary["step"] == 40
        reference, _, _ = restore.load_variables(wd)
        records = metrics_lib.read_metrics(wd)
        names = sorted(os.listdir(run_dir))
        assert names == [
            "checkpoints",
            "config.json",
            "metrics.jsonl",
            "summary.json",
            "tensorboard",
        ]
        steps = sorted(int(s) for s in os.listdir(run_dir / "checkpoints"))
        assert steps == [30, 40]
        for s in steps:  # the manifests are in the bucket and verify there
            assert (run_dir / "checkpoints" / str(s) / integrity.MANIFEST).is_file()
            assert integrity.verify(f"{wd}/checkpoints/{s}") is None
        assert [r["step"] for r in records if r["kind"] == "train"] == [10, 20, 30, 40]
        assert ckpt_lib.read_config(wd).model.width == 64
        _no_local_gs_folder(tmp_path)

        # A damaged newest checkpoint in the bucket: skipped, moved aside there, resumed
        # from step 30 (metrics and TensorBoard events after 30 dropped, then rewritten).
        data = _largest_file(run_dir / "checkpoints" / "40" / "state")
        data.write_bytes(bytes(b ^ 0xFF for b in data.read_bytes()))
        (run_dir / lock_lib.LOCK_FILE).write_text("1 another-host abc\n")  # a run elsewhere
        with pytest.raises(lock_lib.WorkdirLockedError, match="gs://bucket/run/run.lock"):
            train.train_and_evaluate(config, wd)
        (run_dir / lock_lib.LOCK_FILE).unlink()
        again = train.train_and_evaluate(config, wd)
        assert again["steps_this_session"] == 10
        assert (run_dir / ckpt_lib.CORRUPT_DIR / "40").is_dir()
        resumed, _, _ = restore.load_variables(wd)
        for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(reference), strict=True):
            np.testing.assert_array_equal(a, b)
        assert _without_timing(metrics_lib.read_metrics(wd)) == _without_timing(records)
        scalars = metrics_lib.read_event_scalars(wd)
        assert len(scalars) == len(set(scalars)) and ("train/train_loss", 40) in scalars
        assert not (run_dir / lock_lib.LOCK_FILE).exists()  # released
    _no_local_gs_folder(tmp_path)


def test_gs_lock_create_read_back_stale_and_foreign(tmp_path, monkeypatch):
    monkeypatch.setattr(lock_lib, "REMOTE_SETTLE_S", 0.0)
    monkeypatch.chdir(tmp_path)
    lock_file = tmp_path / "bucket" / "w" / lock_lib.LOCK_FILE
    with gs_on_disk(tmp_path):
        path = lock_lib.acquire("gs://bucket/w")
        assert path == "gs://bucket/w/run.lock"
        pid, host, nonce = lock_file.read_text().split()
        assert (int(pid), host, len(nonce)) == (os.getpid(), socket.gethostname(), 32)
        with pytest.raises(lock_lib.WorkdirLockedError, match=f"in use by process {pid}"):
            lock_lib.acquire("gs://bucket/w")  # held by a live process (this one)
        lock_lib.release(path)
        assert not lock_file.exists()
        lock_file.write_text(f"999999999 {socket.gethostname()} abc\n")  # dead, this host
        path = lock_lib.acquire("gs://bucket/w")
        assert lock_file.read_text().split()[0] == str(os.getpid())
        lock_lib.release(path)
        lock_file.write_text("999999999 another-host abc\n")  # dead? cannot tell: refused
        with pytest.raises(lock_lib.WorkdirLockedError, match="on host another-host"):
            lock_lib.acquire("gs://bucket/w")
        lock_lib.release(path)  # not ours: kept
        assert lock_file.exists()
    _no_local_gs_folder(tmp_path)


def _refusal(workdir):
    with pytest.raises(ConfigError) as e:
        preflight.check_workdir(workdir)
    return str(e.value)


def test_remote_workdir_without_a_usable_backend_is_refused_before_writing(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    msg = _refusal("foo://bucket/run")
    assert msg.startswith("workdir 'foo://bucket/run' cannot be used") and "gs, s3" in msg
    # TF installed: epath takes tf.io.gfile, which has no s3:// file system here.
    if "s3" not in __import__("tensorflow").io.gfile.get_registered_schemes():
        assert "no s3:// file system" in _refusal("s3://bucket/run")
    monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)  # fsspec: s3:// needs s3fs
    if "s3fs" not in sys.modules and not __import__("importlib").util.find_spec("s3fs"):
        assert "fsspec cannot open s3://" in _refusal("s3://bucket/run")
    with gs_on_disk(tmp_path, storage_client=False):
        msg = _refusal("gs://bucket/run")
        capsys.readouterr()
        config = f"--config={ROOT / 'configs' / 'mnist_mlp.py'}"
        code = main.run(["main.py", "--workdir=gs://bucket/run", config])
    assert "google-cloud-storage" in msg and "gs://bucket/run" in msg
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert code == 2 and errors == ["error: " + msg]
    assert os.listdir(tmp_path) == []  # nothing written, no local "gs:" / "s3:" folder
    _no_local_gs_folder(tmp_path)
