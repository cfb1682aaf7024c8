"""Files that appear complete or not at all, on local disks and gs:// alike (through tf.io.gfile).

A writer puts the content in a temp file with a unique name in the same directory, then renames it
over the target: a reader sees the old file or the new one, never a half-written one, and two
writers never share a temp file. The temp file is removed when writing fails.
"""

from __future__ import annotations

import contextlib
import posixpath
import uuid
from typing import Iterator, Union

import tensorflow as tf


def temp_path(path: str) -> str:
    """A unique hidden sibling of `path`: `<dir>/.<name>.tmp-<hex>`."""
    directory, name = posixpath.split(path)
    return posixpath.join(directory, f".{name}.tmp-{uuid.uuid4().hex}")


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yields a temp path to write to; on success it replaces `path`, on failure it is removed."""
    tmp = temp_path(path)
    try:
        yield tmp
        tf.io.gfile.rename(tmp, path, overwrite=True)
    except BaseException:
        with contextlib.suppress(Exception):
            if tf.io.gfile.exists(tmp):
                tf.io.gfile.remove(tmp)
        raise


def atomic_write(path: str, data: Union[bytes, str]) -> None:
    """Writes `data` (bytes, or str as UTF-8) to `path` atomically."""
    with atomic_path(path) as tmp:
        with tf.io.gfile.GFile(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
