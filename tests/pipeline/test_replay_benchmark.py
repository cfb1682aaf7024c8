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


def _row(variant, day, recall, trainer_s, exit_code=0, popular=0.2, frozen=0.25):
    reference = {"recall_at_10": popular, "hit_rate_at_10": 0.5, "day_old_share": 0.0, "day_old_hit_rate": None}
    return {"variant": variant, "day": day, "next_day": day + 1, "exit_code": exit_code, "recall_at_10": recall,
            "hit_rate_at_10": 0.6, "day_old_share": 0.1, "day_old_hit_rate": 0.3, "run_s": 60.0, "trainer_s": trainer_s,
            "most_popular": reference, "frozen": {**reference, "recall_at_10": frozen}}


def test_the_summary_averages_the_compared_days_and_states_the_targets_ratios():
    rows = [_row("warm", 1, 0.9, 99.0), _row("warm", 2, 0.3, 10.0), _row("warm", 3, 0.5, 20.0, exit_code=3),
            _row("cold", 1, 0.9, 99.0), _row("cold", 2, 0.4, 40.0), _row("cold", 3, 0.4, 40.0)]
    summary = R.summarize(rows, ["warm", "cold"], compared={3, 4})  # next days 3 and 4: days 2 and 3
    assert summary["warm"]["recall_at_10"] == 0.4 and summary["cold"]["recall_at_10"] == 0.4
    assert summary["warm"]["blessed_days"] == 2 and summary["cold"]["blessed_days"] == 3
    assert summary["ratios"]["warm_over_cold_trainer_s"] == 0.375  # 15 s against 40 s
    assert summary["ratios"]["warm_over_cold_recall"] == 1.0
    assert summary["ratios"]["warm_over_frozen_recall"] == 1.6
    assert summary["ratios"]["warm_over_most_popular_recall"] == 2.0
    assert summary["most_popular"]["day_old_hit_rate"] is None  # never listed a day-old item


@pytest.mark.slow
def test_the_replay_runs_day_by_day_under_a_live_server(tmp_path, capsys):
    """Three days, window 2, warm, on a tiny timeline (a day of it is thin data: the gates here only have to bless,
    as in test_spans_e2e); the daily push is swapped in under the client loop without a failed request."""
    result = R.run(str(tmp_path / "replay"), num_days=3, window=2, scale=0.1, variants=["warm"],
                   run_args=["--min-lift-over-popular", "-0.5", "--max-recall-regression", "1"])
    paths = R.write(result, str(tmp_path))
    out = capsys.readouterr().out
    assert [(r["variant"], r["day"]) for r in result["days"]] == [("warm", 1), ("warm", 2)]
    assert [r["exit_code"] for r in result["days"]] == [0, 0], result["days"]
    first, second = (r["served_version"] for r in result["days"])
    assert first and second and second != first  # day 2's model pushed, and it is the one scored
    assert "warm start: ease from" in out  # day 2 started from day 1's model
    assert result["swaps"]["requests_ok"] > 0 and result["swaps"]["requests_failed"] == 0, result["swaps"]
    for name in ("warm", "frozen", "most_popular"):
        assert 0 < result["summary"][name]["recall_at_10"] <= 1, result["summary"]
    assert result["summary"]["warm"]["trainer_s"] > 0 and result["days"][1]["metadata_mb"] > 0
    assert json.loads(open(paths[0]).read())["summary"] == result["summary"]
    assert "| warm |" in open(paths[1]).read()
    assert cli.main(["benchmark", "--replay", "--days", "1", "--output-dir", str(tmp_path)]) == cli.EXIT_ERROR
    assert "--replay needs --days of at least 2" in capsys.readouterr().err
