"""Dated spans (issue 19): which span a run reads, and the one-line refusals of a span not to train on."""

import os

import pytest

from components import features as F
from components import spans


def _span(root, n, rows="u1,i1,4.0,1\n", marker=True, items=None):
    directory = root / f"span-{n}"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / F.INTERACTIONS_FILE).write_text("user_id,item_id,rating,timestamp\n" + rows)
    if items is not None:
        (directory / F.ITEMS_FILE).write_text(items)
    if marker:
        (directory / spans.SUCCESS_MARKER).write_text("")


def test_latest_is_the_newest_span_and_a_number_names_one(tmp_path):
    for n, rows in ((1, "u1,i1,4.0,1\n"), (2, "u1,i2,4.0,2\n"), (10, "u2,i1,3.0,3\n")):
        _span(tmp_path, n, rows)
    (tmp_path / "notes").mkdir()
    assert spans.list_spans(str(tmp_path)) == [1, 2, 10]  # numeric order, other directories ignored
    assert spans.choose(str(tmp_path), "latest") == 10 and spans.choose(str(tmp_path), "2") == 2
    with pytest.raises(spans.SpanError, match=r"--span 3: no .*span-3 \(spans here: 1..10\)"):
        spans.choose(str(tmp_path), "3")
    with pytest.raises(spans.SpanError, match="--span 'newest': give latest or a span number"):
        spans.choose(str(tmp_path), "newest")
    with pytest.raises(spans.SpanError, match="no span directories"):
        spans.choose(str(tmp_path / "notes"), "latest")


@pytest.mark.parametrize("make, message", [
    (lambda root: _span(root, 2, marker=False), r"span-2: not complete \(no _SUCCESS marker"),
    (lambda root: _span(root, 2, rows=""), r"span-2/interactions.csv: no interactions \(an empty span\)"),
    (lambda root: _span(root, 2, rows="u1,i1,4.0,1\n"), r"span-2/interactions.csv: the same interactions as span 1"),
    (lambda root: _span(root, 2, rows="u1,i2,4.0,2\nu2,i2,3.0,2\nu1,i2,4.0,2\n"),
     r"span-2/interactions.csv: 1 of 3 rows repeat an earlier row exactly"),
])
def test_an_incomplete_empty_or_redelivered_span_is_one_line(tmp_path, make, message):
    _span(tmp_path, 1)
    make(tmp_path)
    with pytest.raises(spans.SpanError, match=message) as refused:
        span = spans.choose(str(tmp_path), "latest")
        spans.check_content(str(tmp_path), span, F.INTERACTIONS_FILE)
    assert "\n" not in str(refused.value) and "the served model stays" in str(refused.value)


def test_a_span_reads_its_own_catalogue_else_the_roots(tmp_path):
    _span(tmp_path, 1)
    _span(tmp_path, 2, rows="u1,i2,4.0,2\n", items="item_id,title\ni2,B\n")
    (tmp_path / F.ITEMS_FILE).write_text("item_id,title\ni1,A\n")
    root = str(tmp_path)
    assert spans.side_file(root, "span-2/interactions.csv", F.ITEMS_FILE) == os.path.join(root, "span-2", F.ITEMS_FILE)
    assert spans.side_file(root, "span-1/interactions.csv", F.ITEMS_FILE) == os.path.join(root, F.ITEMS_FILE)
    assert spans.side_file(root, F.INTERACTIONS_FILE, F.ITEMS_FILE) == os.path.join(root, F.ITEMS_FILE)
    assert spans.pattern(F.INTERACTIONS_FILE) == "span-{SPAN}/interactions.csv"
