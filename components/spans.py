"""Dated spans of a data root: DATA_ROOT/span-{SPAN}/interactions.* (and optional per-span items.* / users.*, else
the root's), each complete only once its `_SUCCESS` marker exists.

TFX's ExampleGen reads a span through its own range configuration (the `{SPAN}` placeholder in the input pattern,
a RangeConfig naming the span); this module decides which span that is before any component runs, and refuses,
in one line each, a span that is missing, incomplete (no marker), empty, holding the same row twice, or a
re-delivery of an earlier day (the same interactions bytes as another span).
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from typing import List, Optional, Tuple

SPAN_PLACEHOLDER = "{SPAN}"  # TFX's placeholder (tfx.components.example_gen.utils.SPAN_SPEC)
SPAN_DIR = f"span-{SPAN_PLACEHOLDER}"
SUCCESS_MARKER = "_SUCCESS"  # written last by whatever delivers a span: the span is complete
LATEST = "latest"
_SPAN_NAME = re.compile(r"^span-(\d+)$")


def _gfile():
    """tf.io.gfile, imported when first used: the CLI imports this module and `recsys --help` stays instant."""
    import tensorflow as tf

    return tf.io.gfile


class SpanError(ValueError):
    """A span that cannot be trained on: one line naming the span and why."""


def span_dir(root: str, span: int) -> str:
    return posixpath.join(root, SPAN_DIR.replace(SPAN_PLACEHOLDER, str(span)))


def pattern(file_name: str) -> str:
    """The ExampleGen input pattern of `file_name` inside each span directory."""
    return posixpath.join(SPAN_DIR, file_name)


def list_spans(root: str) -> List[int]:
    """The span numbers under `root`, ascending (complete or not)."""
    if not _gfile().isdir(root):
        return []
    found = (_SPAN_NAME.match(name.rstrip("/")) for name in _gfile().listdir(root))
    return sorted(int(m.group(1)) for m in found if m)


def is_span_root(root: str) -> bool:
    return bool(list_spans(root))


def _rows_and_duplicates(path: str) -> Tuple[int, int]:
    """(data rows, rows that repeat an earlier row exactly) of a CSV; a non-empty file of another format counts as
    one row and no duplicates (its reader checks it)."""
    if not path.endswith(".csv"):
        return int(_gfile().stat(path).length > 0), 0
    seen, rows, duplicates = set(), 0, 0
    with _gfile().GFile(path, "rb") as f:
        next(f, None)  # the header
        for line in f:
            line = line.strip()
            if not line:
                continue
            rows += 1
            digest = hashlib.blake2b(line, digest_size=16).digest()
            duplicates += digest in seen
            seen.add(digest)
    return rows, duplicates


def _digest(path: str) -> str:
    sha = hashlib.sha256()
    with _gfile().GFile(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def _interactions(root: str, span: int, file_name: str) -> Optional[str]:
    path = posixpath.join(span_dir(root, span), file_name)
    return path if _gfile().exists(path) else None


def choose(root: str, requested: str) -> int:
    """The span to train on (`latest`: the newest span directory; or its number), checked present and complete."""
    spans = list_spans(root)
    if not spans:
        raise SpanError(f"{root}: no span directories ({SPAN_DIR.replace(SPAN_PLACEHOLDER, 'N')}/)")
    if requested == LATEST:
        span = spans[-1]
    else:
        try:
            span = int(requested)
        except ValueError:
            raise SpanError(f"--span {requested!r}: give {LATEST} or a span number") from None
        if span not in spans:
            raise SpanError(f"--span {span}: no {span_dir(root, span)} (spans here: {spans[0]}..{spans[-1]})")
    require_complete(span_dir(root, span))
    return span


def require_complete(directory: str) -> None:
    if not _gfile().exists(posixpath.join(directory, SUCCESS_MARKER)):
        raise SpanError(f"{directory}: not complete (no {SUCCESS_MARKER} marker; whoever delivers a span writes it "
                        f"last): nothing trained, the served model stays")


def complete_before(root: str, span: int, window: int) -> int:
    """How many complete spans precede `span` inside a window of `window` spans ending at it."""
    return sum(_gfile().exists(posixpath.join(span_dir(root, earlier), SUCCESS_MARKER))
               for earlier in list_spans(root) if span - window < earlier < span)


def is_span_pattern(split_pattern: str) -> bool:
    """Whether ExampleGen's (span-filled) input pattern reads one span's directory."""
    directory = posixpath.dirname(split_pattern)
    return bool(directory) and bool(_SPAN_NAME.match(posixpath.basename(directory)))


def check_content(root: str, span: int, interactions_file: str) -> None:
    """Refuses a span whose interactions are missing, empty, or the same bytes as another span's (a re-delivery)."""
    path = _interactions(root, span, interactions_file)
    if path is None:
        raise SpanError(f"{span_dir(root, span)}: no {interactions_file}: nothing trained, the served model stays")
    rows, duplicates = _rows_and_duplicates(path)
    if rows == 0:
        raise SpanError(f"{path}: no interactions (an empty span): nothing trained, the served model stays")
    if duplicates:
        raise SpanError(f"{path}: {duplicates} of {rows} rows repeat an earlier row exactly (a delivery written twice?): "
                        f"nothing trained, the served model stays")
    size, digest = _gfile().stat(path).length, None
    for other in list_spans(root):
        other_path = _interactions(root, other, interactions_file) if other != span else None
        if other_path is None or _gfile().stat(other_path).length != size:
            continue
        digest = digest or _digest(path)
        if _digest(other_path) == digest:
            raise SpanError(f"{path}: the same interactions as span {other} (a re-delivered day?): nothing trained, "
                            f"the served model stays")


def side_file(input_base: str, split_pattern: str, file_name: str) -> str:
    """A side table (items, users) for the interactions at `split_pattern`: the span directory's own copy when it
    has one (a catalogue that changes by day), else the data root's."""
    if is_span_pattern(split_pattern):
        own = posixpath.join(input_base, posixpath.dirname(split_pattern), file_name)
        if _gfile().exists(own):
            return own
    return posixpath.join(input_base, file_name)
