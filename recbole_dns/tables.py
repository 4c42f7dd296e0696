"""Result tables as files: one CSV writer for the sweeps, the experiments and the benchmarks."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterable, Mapping


def write_csv(path: str | Path, rows: Iterable[Mapping], fields: Iterable[str] = ()) -> Path:
    """Write ``rows`` as CSV. Header: ``fields``, then the rows' other keys in first-seen order; a row
    without a column leaves it empty."""
    rows = list(rows)
    header = list(dict.fromkeys([*fields, *(k for row in rows for k in row)]))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)
