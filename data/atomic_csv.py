"""CSV files that appear complete or not at all: written to `path.tmp`, renamed over `path` on success."""

from __future__ import annotations

import contextlib
import csv
import os
from typing import Iterator, Sequence


@contextlib.contextmanager
def atomic_csv(path: str, header: Sequence[str]) -> Iterator["csv._writer"]:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            yield writer
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
