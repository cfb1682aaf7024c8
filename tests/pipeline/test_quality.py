"""The quality benchmark: its metrics on hand-checked cases, and one real run through the CLI."""

import json
import math

import pytest

from pipeline import cli
from pipeline.quality import baselines, ranking_metrics


def test_ranking_metrics_on_hand_checked_cases():
    ranked = {"a": ["x", "y", "z"], "b": ["p", "q", "r"], "c": ["m"]}
    relevant = {"a": {"y"}, "b": {"nope"}, "c": {"m", "n"}}
    recall, ndcg = ranking_metrics(ranked, relevant, k=3)
    # a: hit at rank 2 -> recall 1, ndcg 1/log2(3); b: miss; c: 1 of 2 at rank 1 -> recall .5, ndcg 1/(1+1/log2(3))
    assert recall == pytest.approx((1 + 0 + 0.5) / 3)
    assert ndcg == pytest.approx((1 / math.log2(3) + 0 + 1 / (1 + 1 / math.log2(3))) / 3)


def test_bias_baseline_learns_biases_and_ranks_popular_unrated_items():
    train = [("u1", "i1", 5.0), ("u1", "i2", 1.0), ("u2", "i1", 5.0), ("u3", "i1", 4.0), ("u3", "i3", 2.0)]
    held_out = [("u2", "i3", 2.0)]
    global_mean, biases = baselines(train, held_out, {"u2": {"i3"}}, k=1)
    assert global_mean.rmse == pytest.approx(abs(3.4 - 2.0))
    assert biases.rmse < global_mean.rmse  # i3 is rated below the mean
    # u2 rated i1 already; the most popular unrated item is i2 or i3 (one rating each): i2 comes first.
    assert (biases.recall, biases.ndcg) == (0.0, 0.0)


@pytest.mark.slow
def test_benchmark_command_compares_a_model_with_the_baselines(tiny_data, tmp_path, capsys):
    out = tmp_path / "bench"
    assert cli.main(["benchmark", "--data-root", tiny_data, "--models", "mf", "--epochs", "6",
                     "--output-dir", str(out)]) == 0
    result = json.loads((out / "benchmark.json").read_text())
    rows = {r["name"].split(" (")[0]: r for r in result["rows"]}
    assert set(rows) == {"mf", "global mean", "user+item biases"}
    assert result["protocol"] == "leave-last-one-out" and result["held_out_ratings"] >= 250
    assert rows["mf"]["rmse"] < rows["global mean"]["rmse"]
    assert 0 <= rows["mf"]["recall"] <= 1 and rows["mf"]["recall"] > 0
    assert "| mf |" in (out / "benchmark.md").read_text()
    assert "Recall@10" in capsys.readouterr().out
