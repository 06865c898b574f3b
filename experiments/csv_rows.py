"""Rows of dicts to CSV: the one writer of the experiments' result tables."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from typing import Optional


def write_csv(rows: Sequence[dict], path: str, fieldnames: Optional[Sequence[str]] = None) -> None:
    """Write ``rows`` with a header; columns ``fieldnames`` (default: the first row's keys)."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(fieldnames or rows[0]))
        w.writeheader()
        w.writerows(rows)
