"""benchmarks/startup.py end to end on a tiny CIFAR ResNet: two real launches, one cache."""

import re

from benchmarks import startup

LAST = re.compile(r"second launch compile: cifar (\d+)% of the first")


def test_second_launch_loads_from_the_cache(capsys):
    startup.main(["--models=cifar", "--width=2", "--batch=2"])
    lines = capsys.readouterr().out.strip().splitlines()
    rows = [line.split() for line in lines if line.startswith("cifar ")]
    assert [r[1] for r in rows] == ["1", "2"]
    first_s, first_hits = float(rows[0][3]), int(rows[0][4])
    second_s, second_hits = float(rows[1][3]), int(rows[1][4])
    assert first_hits == 0 < second_hits  # launch 2 loaded programs launch 1 stored
    assert 0 < second_s < first_s
    match = LAST.fullmatch(lines[-1])
    assert match and int(match.group(1)) < 100, lines[-1]
