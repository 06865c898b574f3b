"""Every code block of docs/masks.md runs (one example per library) and its asserts hold."""

import pathlib
import re

import pytest

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "masks.md"
LIBRARIES = ["Flax Linen", "Flax NNX", "Haiku", "Equinox", "Plain dicts (PyTorch names)"]
FORWARD = "Masks in the forward pass and in any optax optimizer"


def _blocks():
    """``{section heading: [python code blocks]}`` of the doc."""
    out, section = {}, None
    for part in re.split(r"^(## .*)$", DOC.read_text(), flags=re.M):
        if part.startswith("## "):
            section = part[3:].strip()
        elif section is not None:
            out[section] = re.findall(r"^```python\n(.*?)^```$", part, flags=re.M | re.S)
    return out


def test_one_example_per_library():
    blocks = _blocks()
    assert [s for s in LIBRARIES + [FORWARD] if len(blocks.get(s, [])) != 1] == []


@pytest.mark.parametrize("section", LIBRARIES + [FORWARD])
def test_doc_example_runs(section, capsys):
    pytest.importorskip({"Haiku": "haiku", "Equinox": "equinox"}.get(section, "flax"))
    (code,) = _blocks()[section]
    exec(compile(code, f"{DOC.name}: {section}", "exec"), {"__name__": "docs_example"})
    if section == "Flax Linen":
        assert "fc/kernel" in capsys.readouterr().out
