"""CSV files that appear complete or not at all: streamed to a unique temp file, renamed over `path` on success
(components.atomic_io), so a generator or importer that fails never leaves half a file behind."""

from __future__ import annotations

import contextlib
import csv
import posixpath
from typing import Iterator, Sequence

import tensorflow as tf

from components.atomic_io import atomic_path


@contextlib.contextmanager
def atomic_csv(path: str, header: Sequence[str]) -> Iterator["csv._writer"]:
    tf.io.gfile.makedirs(posixpath.dirname(path) or ".")
    with atomic_path(path) as tmp:
        with tf.io.gfile.GFile(tmp, "w") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            yield writer
