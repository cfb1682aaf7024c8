"""`recsys benchmark --replay` (issue 19, part 7): how a day is scored, and the replay end to end on a tiny timeline."""

import json

import pytest

from pipeline import cli, replay_benchmark as R


def test_a_day_is_scored_on_the_next_days_picks_with_day_old_items_counted():
    lists = {"a": ["new1", "x", "y"], "b": ["p", "q", "new2"], "c": ["z"]}
    relevant = {"a": {"new1", "y"}, "b": {"r"}, "d": {"q"}}
    scored = R.score(lists, relevant, day_old={"new1", "new2"})
    assert scored["users"] == 3  # everyone who picked something: a user without a list (d) counts as a miss
    assert scored["recall_at_10"] == pytest.approx((2 / 2 + 0 + 0) / 3, abs=1e-4)
    assert scored["hit_rate_at_10"] == pytest.approx(1 / 3, abs=1e-4)
    assert scored["day_old_share"] == pytest.approx(2 / 7, abs=1e-4)  # 2 of the 7 slots hold day-old items
    assert scored["day_old_hit_rate"] == 0.5  # new1 was picked by a, new2 not by b
    assert R.score({"a": ["x"]}, {"a": {"x"}}, day_old=set())["day_old_hit_rate"] is None


def test_most_popular_counts_the_window_leaves_out_each_users_items_and_retired_ones():
    window = [R.Day({"a": {"i1", "i2"}, "b": {"i1"}}, {"i1", "i2", "i3"}),
              R.Day({"c": {"i1", "i3"}, "b": {"i3"}}, {"i1", "i2", "i3"})]
    lists = R.popular_lists(window, ["a", "b", "new"], active={"i1", "i2"})  # i3 retired: never listed
    assert lists == {"a": [], "b": ["i2"], "new": ["i1", "i2"]}


@pytest.mark.slow
def test_the_replay_runs_day_by_day_under_a_live_server(tmp_path, capsys):
    """Three days, window 2, warm and cold, on a tiny timeline (one day of it is thin data: the gate asks for half of
    most popular's recall here, as in test_spans_e2e); every daily push is swapped in under the client loop."""
    result = R.run(str(tmp_path / "replay"), num_days=3, window=2, scale=0.1,
                   run_args=["--min-lift-over-popular", "-0.5"])
    paths = R.write(result, str(tmp_path))
    out = capsys.readouterr().out
    assert [(r["variant"], r["day"]) for r in result["days"]] == [("warm", 1), ("warm", 2), ("cold", 1), ("cold", 2)]
    assert all(r["exit_code"] == 0 for r in result["days"]), result["days"]
    assert [r["served_version"] is not None for r in result["days"]] == [True] * 4
    assert "warm start: ease from" in out  # day 2 of the warm variant started from day 1's model
    assert result["swaps"]["requests_ok"] > 0 and result["swaps"]["requests_failed"] == 0, result["swaps"]
    for name in ("warm", "cold", "frozen", "most_popular"):
        assert 0 < result["summary"][name]["recall_at_10"] <= 1, result["summary"]
    assert result["summary"]["warm"]["trainer_s"] > 0 and result["days"][1]["metadata_mb"] > 0
    assert json.loads(open(paths[0]).read())["summary"] == result["summary"]
    assert "| warm |" in open(paths[1]).read()
    assert cli.main(["benchmark", "--replay", "--days", "1", "--output-dir", str(tmp_path)]) == cli.EXIT_ERROR
    assert "--replay needs --days of at least 2" in capsys.readouterr().err
