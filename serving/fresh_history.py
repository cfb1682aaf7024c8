"""Fresh per-user histories for `recsys serve --fresh-history SOURCE`: what users did after the model was trained.

A served model scores a known user from the history it was exported with (everything the pipeline saw); the
interactions that arrive between two runs would wait for the next run. Here the server reads them from SOURCE,
either a data root of dated spans (the newest complete span's interactions.csv: a span with its `_SUCCESS`
marker) or one CSV file, with the columns user_id and item_id (and timestamp, which orders each user's items when
present; else file order). A user's newest `max_items` items are kept.

The histories are re-read on a schedule, only when the file changed (its path, size or modification time), into
a new table that replaces the old one in one reference assignment: a request sees the old table or the new one,
never a half-read file, and the model is not reloaded. A refresh that fails (a file being rewritten, a missing
column) is logged in one line and counted, once per version of the file; the previous table keeps serving. The
age of the file the table came from, its size and the failures are Prometheus gauges beside the request metrics.

serving/inference.py applies them: a `recommend` or `recommend_filtered` request that excludes what the user has
seen is answered through the model's own `recommend_by_history` signature with each user's fresh items as the
request history (plus the stored one), so the answer leaves them out and scores from them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import posixpath
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

import tensorflow as tf
from prometheus_client import CollectorRegistry, Counter, Gauge

from components import features as F
from components import spans
from components.guards import MAX_HISTORY_ITEMS

log = logging.getLogger(__name__)

DEFAULT_REFRESH_SECONDS = 60.0


class FreshHistoryError(ValueError):
    """A source the histories cannot be read from: one line naming it."""


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """One read of the source: each user's newest items, oldest first."""

    histories: Dict[bytes, Tuple[bytes, ...]]
    path: str
    stamp: Tuple[float, int]  # the file's modification time and size when read
    interactions: int
    loaded_at: float


def source_file(source: str) -> str:
    """The file to read: SOURCE itself, or the interactions file of the newest complete span under it."""
    gfile = tf.io.gfile
    if gfile.isdir(source):
        complete = [s for s in spans.list_spans(source)
                    if gfile.exists(posixpath.join(spans.span_dir(source, s), spans.SUCCESS_MARKER))]
        if not complete:
            raise FreshHistoryError(f"--fresh-history {source}: no complete span (span-N/ with a "
                                    f"{spans.SUCCESS_MARKER} marker) and not a CSV file")
        return posixpath.join(spans.span_dir(source, complete[-1]), F.INTERACTIONS_FILE)
    if not gfile.exists(source):
        raise FreshHistoryError(f"--fresh-history {source}: no such file or directory")
    return source


def _stamp(path: str) -> Tuple[float, int]:
    stat = tf.io.gfile.stat(path)
    return stat.mtime_nsec / 1e9, stat.length


def read(path: str, max_items: int = MAX_HISTORY_ITEMS) -> Tuple[Dict[bytes, Tuple[bytes, ...]], int]:
    """({user id: their newest `max_items` item ids, oldest first}, interactions read) from a CSV file."""
    with tf.io.gfile.GFile(path, "r") as f:
        reader = csv.DictReader(io.StringIO(f.read()))
        missing = [c for c in (F.USER_ID, F.ITEM_ID) if c not in (reader.fieldnames or ())]
        if missing:
            raise FreshHistoryError(f"{path}: no {' or '.join(missing)} column (columns: "
                                    f"{', '.join(reader.fieldnames or ()) or 'none'})")
        rows = [(r[F.USER_ID], r[F.ITEM_ID], r.get(F.TIMESTAMP) or "") for r in reader]
    if rows and all(t for _, _, t in rows):
        try:
            order = sorted(range(len(rows)), key=lambda n: float(rows[n][2]))  # stable: ties keep file order
            rows = [rows[n] for n in order]
        except ValueError:
            pass  # timestamps that are not numbers: file order
    histories: Dict[bytes, List[bytes]] = {}
    for user, item, _ in rows:
        if user and item:
            histories.setdefault(user.encode(), []).append(item.encode())
    return {user: tuple(items[-max_items:]) for user, items in histories.items()}, len(rows)


class FreshHistories:
    """The table requests read (`rows`), refreshed from `source` every `refresh_seconds` on a thread of its own."""

    def __init__(self, source: str, refresh_seconds: float = DEFAULT_REFRESH_SECONDS,
                 max_items: int = MAX_HISTORY_ITEMS, registry: Optional[CollectorRegistry] = None,
                 clock=time.time):
        if refresh_seconds <= 0:
            raise FreshHistoryError(f"--fresh-history-refresh-seconds {refresh_seconds:g}: must be positive")
        self.source, self.refresh_seconds, self.max_items, self._clock = source, refresh_seconds, max_items, clock
        self._snapshot: Optional[Snapshot] = None
        self._failed: Optional[Tuple[str, Tuple[float, int]]] = None  # the file (and stamp) a refresh failed on
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        registry = registry or CollectorRegistry()
        Gauge(":recsys:fresh_history:age_seconds", "Seconds since the file the fresh histories came from was "
              "written", registry=registry).set_function(lambda: self.age_seconds)
        Gauge(":recsys:fresh_history:users", "Users with a fresh history",
              registry=registry).set_function(lambda: len(self._snapshot.histories) if self._snapshot else 0)
        Gauge(":recsys:fresh_history:interactions", "Interactions read into the fresh histories",
              registry=registry).set_function(lambda: self._snapshot.interactions if self._snapshot else 0)
        self._failures = Counter(":recsys:fresh_history:refresh_failures", "Refreshes that failed (the previous "
                                 "histories kept serving)", registry=registry)

    @property
    def snapshot(self) -> Optional[Snapshot]:
        return self._snapshot

    @property
    def age_seconds(self) -> float:
        """How old the served histories' file is (NaN before the first read)."""
        snapshot = self._snapshot
        return max(0.0, self._clock() - snapshot.stamp[0]) if snapshot else float("nan")

    def refresh(self) -> bool:
        """Re-reads the source when its file changed; True when a new table replaced the old one."""
        path = source_file(self.source)
        stamp = _stamp(path)
        current = self._snapshot
        if (path, stamp) in ((current.path, current.stamp) if current else None, self._failed):
            return False  # unchanged, or the same file that failed before (tried again once it changes)
        try:
            histories, interactions = read(path, self.max_items)
            if _stamp(path) != stamp:  # rewritten while read: the next refresh reads it whole
                raise FreshHistoryError(f"{path}: changed while it was read")
        except Exception:
            self._failed = (path, stamp)
            raise
        self._snapshot = Snapshot(histories, path, stamp, interactions, self._clock())
        log.info("fresh histories: %d users, %d interactions from %s (written %.0f s ago)", len(histories),
                 interactions, path, self.age_seconds)
        return True

    def rows(self, user_ids: Sequence[bytes]) -> List[Tuple[bytes, ...]]:
        """Each user's fresh items (empty for a user without any), from one table."""
        snapshot = self._snapshot
        if snapshot is None:
            return [() for _ in user_ids]
        return [snapshot.histories.get(bytes(user), ()) for user in user_ids]

    def start(self) -> None:
        """Reads the source once (an unreadable one is refused here, in one line), then refreshes on a thread."""
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="fresh-history", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            try:
                self.refresh()
            except Exception as e:  # noqa: BLE001 (any failure: log, count, keep the previous table)
                self._failures.inc()
                log.warning("fresh histories: refresh failed, the previous ones keep serving: %s", e)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
