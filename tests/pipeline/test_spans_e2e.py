"""`recsys run --span` on the timeline sample (issue 19): TFX reads the span through its range configuration with
the span's own catalogue, ML Metadata records it, `recsys runs show` names it; a span already blessed is not run
again, an older one and an incomplete one are refused."""

import pytest

from components import spans
from data import timeline
from pipeline import cli

TINY = timeline.TimelineSpec(days=2, initial_items=150, new_items_per_day=15, initial_users=250,
                             new_users_per_day=20, picks_per_visit=8.0)


@pytest.mark.slow
def test_run_reads_the_latest_span_and_refuses_an_incomplete_one(tmp_path, capsys):
    root, out = tmp_path / "timeline", tmp_path / "out"
    timeline.generate(str(root), TINY)
    assert not (root / "items.csv").exists()  # each span has its own catalogue: ExampleGen must read that one
    common = ["--data-root", str(root), "--output-dir", str(out), "--model", "ease"]
    assert cli.main(["run", *common]) == cli.EXIT_ERROR  # spans need --span
    assert "--span latest" in capsys.readouterr().err
    code = cli.main(["run", *common, "--span", "latest"])
    printed = capsys.readouterr()
    assert code == 0, printed.err  # blessed and pushed
    assert f"span 2: {spans.span_dir(str(root), 2)}" in printed.out
    assert (root / "contract.json").exists()  # inferred from span 2's files, kept at the root for review
    assert cli.main(["runs", "show", "--output-dir", str(out)]) == 0
    assert "(data: span 2)" in capsys.readouterr().out  # ExampleGen's span, from ML Metadata

    # ML Metadata knows span 2 is blessed: running it again does nothing, an older span is refused, in one line.
    assert cli.main(["run", *common, "--span", "latest"]) == 0
    assert "span 2 was already trained and blessed" in capsys.readouterr().out
    assert cli.main(["run", *common, "--span", "1"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "span 1 is older than span 2, already trained and blessed" in err[0]

    (root / "span-2" / spans.SUCCESS_MARKER).unlink()  # a span being delivered
    assert cli.main(["run", *common, "--span", "latest"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "span-2: not complete (no _SUCCESS marker" in err[0]
