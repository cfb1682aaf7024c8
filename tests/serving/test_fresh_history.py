"""Fresh histories for `recsys serve --fresh-history` (issue 19, part 4): what is read, when it is re-read, and that a
failed refresh keeps the previous table serving. The served answers are tested on a pipeline's model in
tests/pipeline/test_history_e2e.py."""

import os
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from components import features as F
from components import spans
from components.atomic_io import atomic_write
from serving import fresh_history as H

HEADER = f"{F.USER_ID},{F.ITEM_ID},{F.TIMESTAMP}\n"


def _write(path, rows, header=HEADER):
    atomic_write(str(path), header + "".join(",".join(map(str, row)) + "\n" for row in rows))


def test_each_users_newest_items_in_time_order(tmp_path):
    path = tmp_path / "fresh.csv"
    _write(path, [("u1", "b", 20), ("u2", "x", 5), ("u1", "a", 10), ("u1", "c", 30), ("u1", "d", 40)])
    histories, interactions = H.read(str(path), max_items=3)
    assert interactions == 5
    assert histories == {b"u1": (b"b", b"c", b"d"), b"u2": (b"x",)}  # sorted by timestamp, the newest 3 kept
    _write(path, [("u1", "b"), ("u1", "a")], header=f"{F.USER_ID},{F.ITEM_ID}\n")
    assert H.read(str(path))[0] == {b"u1": (b"b", b"a")}  # no timestamp: file order
    _write(path, [("u1", "a")], header="user,item\n")
    with pytest.raises(H.FreshHistoryError, match=r"fresh.csv: no user_id or item_id column \(columns: user, item\)"):
        H.read(str(path))


def test_a_span_root_gives_its_newest_complete_span(tmp_path):
    for span, complete in ((1, True), (2, True), (3, False)):
        directory = spans.span_dir(str(tmp_path), span)
        os.makedirs(directory)
        _write(os.path.join(directory, F.INTERACTIONS_FILE), [("u1", f"i{span}", span)])
        if complete:
            open(os.path.join(directory, spans.SUCCESS_MARKER), "w").close()
    assert H.source_file(str(tmp_path)) == os.path.join(spans.span_dir(str(tmp_path), 2), F.INTERACTIONS_FILE)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(H.FreshHistoryError, match="no complete span"):
        H.source_file(str(empty))
    with pytest.raises(H.FreshHistoryError, match="no such file or directory"):
        H.source_file(str(tmp_path / "missing.csv"))


def test_refreshes_only_a_changed_file_and_a_failed_refresh_keeps_the_previous_table(tmp_path):
    path = tmp_path / "fresh.csv"
    _write(path, [("u1", "a", 1)])
    registry = CollectorRegistry()
    now = [time.time() + 30]
    fresh = H.FreshHistories(str(path), refresh_seconds=0.05, registry=registry, clock=lambda: now[0])
    assert fresh.rows([b"u1"]) == [()]  # nothing read yet
    fresh.start()
    try:
        assert fresh.rows([b"u1", b"u9"]) == [(b"a",), ()]
        first = fresh.snapshot
        assert 29 < fresh.age_seconds < 40  # the file's age by its modification time
        assert not fresh.refresh() and fresh.snapshot is first  # unchanged: not re-read
        _write(path, [("u1", "a", 1), ("u1", "b", 2)])
        os.utime(path, (first.stamp[0] + 5, first.stamp[0] + 5))
        deadline = time.time() + 10
        while fresh.rows([b"u1"]) != [(b"a", b"b")] and time.time() < deadline:
            time.sleep(0.02)
        assert fresh.rows([b"u1"]) == [(b"a", b"b")]  # the thread re-read it
        _write(path, [("u1", "z")], header="user,item\n")  # a bad rewrite: a missing column
        deadline = time.time() + 10
        while b'refresh_failures_total 0.0' in generate_latest(registry) and time.time() < deadline:
            time.sleep(0.02)
        metrics = generate_latest(registry).decode()
        time.sleep(0.2)  # several refresh periods: the same bad file is not read (nor counted) again
        metrics = generate_latest(registry).decode()
        assert ":recsys:fresh_history:refresh_failures_total 1.0" in metrics, metrics
        assert fresh.rows([b"u1"]) == [(b"a", b"b")]  # the previous table still serves
        assert ":recsys:fresh_history:users 1.0" in metrics and ":recsys:fresh_history:interactions 2.0" in metrics
        assert ":recsys:fresh_history:age_seconds" in metrics
    finally:
        fresh.stop()
    with pytest.raises(H.FreshHistoryError, match="must be positive"):
        H.FreshHistories(str(path), refresh_seconds=0)
