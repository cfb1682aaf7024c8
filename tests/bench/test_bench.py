"""The benchmarks of `make bench` on tiny settings, so a broken benchmark fails CI, not the next bench run.

Numbers are not asserted (a 2-core CI machine is noisy); the result files and the report must hold
the rows `make bench` promises.
"""

import json
import statistics

import pytest

from bench import recommend_scaling, report


def _pipeline_result(path, interactions, trainer_s, epochs):
    """A run as bench/run_pipelines.py writes it (what the report and the scaling rows read); steady epoch
    time = Trainer time / epochs, for easy arithmetic."""
    from bench import common

    components = {"RatingsExampleGen": {"wall_s": 1.0, "peak_rss_mb": 100.0},
                  "Trainer": {"wall_s": trainer_s, "peak_rss_mb": 200.0}}
    run = {"interactions": interactions, "users": 10, "items": 10, "generate_s": 0.1,
           "pipeline_wall_s": trainer_s + 2.0, "orchestrator_overhead_s": 1.0, "peak_rss_mb": 200.0,
           "components": components, "epochs_requested": epochs, "epochs_trained": epochs,
           "steady_epoch_s": trainer_s / epochs}
    common.write_json(path, {"cpus": 2, "beam_args": ["--direct_running_mode=in_memory"],
                             "machine": common.machine(), "runs": [run]})


def _scaling(results, work, full=False):
    """Tiny recommend_scaling; `full` adds the hybrid model and the train-step probe (slower)."""
    small, large = str(results / "pipeline_scale_1k.json"), str(results / "pipeline_scale_10k.json")
    _pipeline_result(small, 1000, 4.0, 2)
    _pipeline_result(large, 10000, 12.0, 1)
    out = results / "recommend_scaling.json"
    assert recommend_scaling.main([
        "--items", "50", "400", "--models", "mf", *(["hybrid"] if full else []), "--hybrid-max-items", "50",
        "--users", "20", "--rated-per-user", "5", "--budget-s", "0.05", "--max-requests", "20",
        "--work-dir", str(work), "--pipeline-results", small, large, "--out", str(out),
        *([] if full else ["--no-step-probe"])]) == 0
    data = json.loads(out.read_text())
    rows = {(r["model"], r["items"]): r for r in data["rows"]}
    assert set(rows) == {("mf", 50), ("mf", 400)} | ({("hybrid", 50)} if full else set())
    for row in rows.values():
        for where in ("in_process", "grpc"):
            assert row[where]["p50_ms"] > 0 and row[where]["p99_ms"] >= row[where]["p50_ms"]
            assert row[where]["items_returned"] == recommend_scaling.K
        assert {"score_all_items", "score_all_items+top_k",
                "score_all_items+exclude_rated+top_k"} <= set(row["breakdown_p50_ms"])
    assert "matmul on the table, no gather" in rows["mf", 400]["breakdown_p50_ms"]
    assert rows["mf", 400]["items_ratio"] == 8.0 and "slope_vs_previous" in rows["mf", 400]
    assert data["growth"] and data["growth"][0].startswith("mf: log-log slopes")
    assert [t["interactions"] for t in data["training"]] == [1000, 10000]
    assert data["training"][1]["per_epoch_ratio"] == 6.0  # 12 s / 1 epoch against 4 s / 2 epochs
    if full:
        assert [p["users"] for p in data["training_step_vs_vocabulary"]] == [11, 11]
    assert not list(work.iterdir())  # SavedModels removed unless --keep
    return data


def test_recommend_scaling_and_report_on_tiny_catalogues(tmp_path):
    results, work = tmp_path / "results", tmp_path / "work"
    results.mkdir()
    work.mkdir()
    _scaling(results, work)
    text = report.build(str(results), str(tmp_path / "report.md"))
    assert "## 4. Scaling" in text and "### Trainer time against interactions" in text
    assert "| mf | 400 |" in text and "| mf | 50 |" in text and "log-log slopes" in text
    assert "## 2. Pipeline wall time per component" in text
    assert (results / "recommend_scaling.png").stat().st_size > 0
    assert (results / "pipeline_components.png").stat().st_size > 0


@pytest.mark.slow
def test_training_throughput_on_a_pipeline_run_and_the_whole_report(pipeline_run, tmp_path):
    from bench import training_throughput

    results, work = tmp_path / "results", tmp_path / "work"
    results.mkdir()
    work.mkdir()
    out = results / "training_throughput.json"
    assert training_throughput.main([
        "--pipeline-output", pipeline_run.output_dir, "--models", "mf", "mlp", "--batch-size", "256",
        "--epochs", "1", "--stream-epochs", "1", "--repeats", "1", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["train_examples"] > 1000
    assert [r["model"] for r in data["rows"]] == ["mf", "mlp"]
    for row in data["rows"]:
        assert row["in_memory_eps"] > 0 and row["input_path_eps"] > 0
        assert row["ratio"] == pytest.approx(statistics.median(row["rounds_ratio"]), abs=0.002)
        assert len(row["rounds_ratio"]) == 1 and row["met"] == (row["ratio"] >= 0.7)
        assert {"eps", "ratio"} <= set(row["before"]) and {"eps", "ratio"} <= set(row["streaming"])
    assert {"tfxio_default_options", "input_fn", "input_fn_original", "in_memory"} <= set(
        data["profile_dataset_alone_eps"])
    assert data["profile_findings"] and data["changes"]
    _scaling(results, work, full=True)
    text = report.build(str(results), str(tmp_path / "report.md"), started_at=0.0)
    assert "## 1. Training throughput" in text and "| mf | 256 |" in text and "| mlp | 256 |" in text
    assert "training throughput mf (bs 256)" in text  # in the targets table
    assert "| hybrid | 50 |" in text and "mf train step alone" in text
    assert "`make bench` wall time" in text
    assert (results / "training_throughput.png").stat().st_size > 0


def test_report_puts_the_ranking_rows_and_their_targets_beside_the_references(tmp_path):
    import json

    results = tmp_path / "results"
    results.mkdir()
    rows = [{"name": "ease", "kind": "model", "recall": 0.30, "ndcg": 0.25, "coverage": 0.2, "rmse": None},
            {"name": "mf", "kind": "model", "recall": 0.07, "ndcg": 0.05, "coverage": 0.1, "rmse": 0.6},
            {"name": "most popular", "kind": "reference", "recall": 0.25, "ndcg": 0.2, "coverage": 0.02},
            {"name": "EASE (lambda 500)", "kind": "reference", "recall": 0.29, "ndcg": 0.24, "coverage": 0.1}]
    (results / "quality_sample.json").write_text(json.dumps({"k": 10, "catalogue": 2000, "rows": rows}))
    text = report.build(str(results), str(tmp_path / "report.md"))
    assert "## Ranking and rating quality" in text and "| EASE (lambda 500) | reference | 0.290 |" in text
    # ease is auto's choice at 2,000 items: 0.30 / 0.25 = 1.2x most popular misses the 1.5x target
    assert "| default model (`auto` = ease) Recall@10 on the sample | 0.3000 | most popular 0.2500 | 1.20 |" in text
    assert "best model (ease)" in text
    (default_row,) = [line for line in text.splitlines() if line.startswith("| default model")]
    (best_row,) = [line for line in text.splitlines() if line.startswith("| best model")]
    assert default_row.endswith("**missed** |") and best_row.endswith("**met** |")  # 0.30 >= EASE's 0.29
