"""benchmarks/input_pipeline.py runs end to end on a tiny self-made set (seconds)."""

import re

from benchmarks import input_pipeline

LAST = re.compile(r"train pipeline: (\S+) img/s/core, torchvision: (\S+) img/s/core, ratio (\S+)")


def test_benchmark_last_line_on_tiny_set(capsys):
    args = ["--classes=2", "--per-class=3", "--batch=2", "--batches=2", "--repeats=1"]
    input_pipeline.main(args)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("6 JPEGs in ")
    match = LAST.fullmatch(lines[-1])
    assert match, lines[-1]
    ours, theirs, ratio = (float(x) for x in match.groups())
    assert ours > 0 and theirs > 0 and ratio > 0
    assert abs(ratio - ours / theirs) <= 0.01 * ratio + 0.005  # ratio printed to 2 decimals
