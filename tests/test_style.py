"""One style: the formatter and the linter configured in pyproject.toml pass on the tree."""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ruff(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("ruff")
    cmd = [exe] if exe else [sys.executable, "-m", "ruff"]
    return subprocess.run(cmd + list(args), cwd=ROOT, capture_output=True, text=True)


@pytest.mark.parametrize("args", [("format", "--check", "."), ("check", ".")])
def test_ruff(args):
    res = _ruff(*args)
    assert res.returncode == 0, f"ruff {' '.join(args)} failed:\n{res.stdout}{res.stderr}"
