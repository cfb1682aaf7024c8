"""`recsys benchmark`: references and reports on tiny data, and one real run through the pipeline."""

import contextlib
import csv
import io
import json
import os

import numpy as np
import pytest

from components import features as F
from components import ranking_eval as R
from pipeline import cli, quality


def _by_name(rows):
    return {r["name"].split(" (")[0]: r for r in rows}


def _tiny_split(root, fraction=0.2):
    with open(os.path.join(root, F.INTERACTIONS_FILE), newline="") as f:
        rows = [(r[F.USER_ID], r[F.ITEM_ID], float(r[F.RATING])) for r in csv.DictReader(f)]
    held = np.random.default_rng(0).random(len(rows)) < fraction
    return [r for r, h in zip(rows, held) if not h], [r for r, h in zip(rows, held) if h]


def test_rating_references_learn_biases():
    train = [("u1", "i1", 5.0), ("u1", "i2", 1.0), ("u2", "i1", 5.0), ("u3", "i1", 4.0), ("u3", "i3", 2.0)]
    held_out = [("u2", "i3", 2.0), ("u9", "i1", None)]  # an unrated interaction counts for ranking only
    mean, biases, svd = quality.rating_references(train, held_out)
    assert (mean.name, biases.name) == ("global mean", "user+item biases") and svd.name.startswith("SVD-style")
    assert svd.rmse is not None and svd.mae is not None
    assert mean.rmse == pytest.approx(abs(3.4 - 2.0)) and mean.mae == pytest.approx(1.4)
    assert biases.rmse < mean.rmse  # i3 is rated below the mean
    assert quality.rating_references([("u1", "i1", None)], held_out) == []  # no ratings: no rating rows


def test_references_and_reports_on_tiny_data(tiny_data, tmp_path):
    train, held_out = _tiny_split(tiny_data)
    catalogue = quality.read_catalogue(tiny_data)
    relevant = R.relevant_by_user((u, i) for u, i, _ in held_out)
    references = quality.ranking_references(R.Interactions.from_pairs([(u, i) for u, i, _ in train], catalogue),
                                            relevant, k=10)
    rows = {r.name.split(" (")[0]: r for r in references}
    assert set(rows) == {"most popular", "ItemKNN", "EASE", "iALS"}
    assert rows["EASE"].recall > 1.3 * rows["most popular"].recall > 0
    assert rows["ItemKNN"].recall > rows["most popular"].recall
    assert rows["most popular"].coverage < rows["EASE"].coverage <= 1.0
    if R.ials_available():
        assert rows["iALS"].recall > 0
    else:
        assert rows["iALS"].recall is None and "not installed" in rows["iALS"].note
    model = quality.Row("mf", quality.MODEL, recall=0.2, ndcg=0.1, coverage=0.5, rmse=0.9, mae=0.7, train_s=12.0,
                        wall_s=60.0, note=quality.VIA)
    result = {"data_root": tiny_data, "test_file": None, "k": 10, "split": "hash", "held_out": "pipeline eval split",
              "held_out_interactions": len(held_out), "users": len(relevant), "catalogue": len(catalogue),
              "train_interactions": len(train),
              "rows": [quality.dataclasses.asdict(r) for r in [model, *references,
                                                               *quality.rating_references(train, held_out)]]}
    json_path, md_path, png_path = quality.write(result, str(tmp_path / "out"))
    assert json.loads(open(json_path).read()) == json.loads(json.dumps(result))
    markdown = open(md_path).read()
    assert "| mf | model | 0.2000 | 0.1000 | 0.500 | 0.9000 | 0.7000 | 12.0 | 60.0 |" in markdown
    assert "| global mean | reference | — | — | — |" in markdown and "Recall@10" in markdown
    with open(png_path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(tmp_path / "out")) == sorted(
        [quality.JSON_FILE, quality.MARKDOWN_FILE, quality.PNG_FILE])  # no temp files left


class _Successor:
    """A stand-in SavedModel whose recommend_by_history answers, per row, the items numbered right after the
    history's newest (highest) item: i3 after [i1, i2]; the stored history of a known user counts when asked."""

    def __init__(self, stored):
        self.stored = stored
        self.signatures = {F.RECOMMEND_BY_HISTORY: self._answer}
        self.calls = []

    def _answer(self, **inputs):
        import tensorflow as tf

        use_stored, k = bool(inputs[F.USE_STORED_HISTORY_INPUT].numpy()), int(inputs[F.K_INPUT].numpy())
        self.calls.append((inputs[F.USER_ID].shape[0], inputs[F.HISTORY_ITEMS_INPUT].shape[1], use_stored, k))
        rows = []
        for user, history in zip(inputs[F.USER_ID].numpy(), inputs[F.HISTORY_ITEMS_INPUT].numpy()):
            items = [i.decode() for i in history if i] + (self.stored.get(user.decode(), []) if use_stored else [])
            top = max([int(i[1:]) for i in items] + [0])
            rows.append([f"i{n}" for n in range(top + 1, top + 1 + k)])
        return {F.ITEMS_OUTPUT: tf.constant(rows, tf.string)}


def test_history_section_protocol_on_a_stand_in_model(tmp_path):
    from data import heldout
    from pipeline import history_benchmark as H

    # u1: i1, i2 in train, i3 in validation, eval i4..i7 written out of time order; u2: too few eval items.
    splits = H.Splits(train=[("u1", "i1", 10), ("u1", "i2", 11), ("u2", "i1", 10), ("u2", "i9", 12)],
                      validation=[("u1", "i3", 12)],
                      eval=[("u1", "i6", 23), ("u1", "i4", 21), ("u1", "i7", 24), ("u1", "i5", 22), ("u2", "i10", 30)])
    assert H.fresh_cases(splits, 1) == [("u1", ["i1", "i2", "i3"], ["i4"], "i5")]
    assert H.fresh_cases(splits, 3) == [("u1", ["i1", "i2", "i3"], ["i4", "i5", "i6"], "i7")]
    assert H.fresh_cases(splits, 4) == []
    root = str(tmp_path)
    os.makedirs(os.path.join(root, heldout.HELDOUT_DIR))
    with open(heldout.path(root, heldout.NEXT_FILE), "w") as f:
        f.write("user_id,item_id\nu1,i8\nu2,i13\nstranger,i1\n")  # a user the pipeline never saw is skipped
    heldout.write_sessions(root, [("s00001", ["i20", "i21"], [1, 2], "i22"), ("s00002", ["i1"], [1], "i9")])
    # Every split; u2's i12 stands for something only the stored history tells.
    stored = {"u1": ["i1", "i2", "i3", "i4", "i5", "i6", "i7"], "u2": ["i1", "i9", "i10", "i12"]}
    model = _Successor(stored)
    bench = H.HistoryBenchmark(root, splits, k=1, num_items=30, split="user-time")
    row = bench.measure("stand-in", model)
    # (a) from every split, both next items follow the newest item; from train + validation (eval items left
    # out of the list: u1 gets i8 after i4..i7) only u1's does.
    assert row["known_users"] == {"users": 2, "stored": 1.0, "train_validation": 0.5, "ratio": 2.0}
    # (b) i22 follows the first session; most popular (train + validation: i1 twice) hits neither.
    assert row["sessions"]["hit_rate"] == 0.5 and row["sessions"]["most_popular"] == 0.0
    assert row["sessions"]["vs_known_users"] == 0.5 and row["sessions"]["vs_most_popular"] is None
    fresh = {f["j"]: f for f in row["fresh"]}
    # without i4: i4 is recommended back (a miss); left out client-side, i5 comes next (a hit); with it: a hit.
    assert (fresh[1]["without"], fresh[1]["without_excluded"], fresh[1]["with"]) == (0.0, 1.0, 1.0)
    assert fresh[1]["lift"] is None and fresh[1]["lift_scoring"] == 1.0 and fresh[4]["users"] == 0
    assert {(rows, use_stored) for rows, _, use_stored, _ in model.calls} >= {(2, True), (2, False), (1, False)}
    assert all(k == 1 + extra for _, _, _, k in model.calls for extra in [k - 1])  # k + the row's exclusions
    markdown = H.to_markdown(bench.result())
    assert "| stand-in | 2 | 1.0000 | 0.5000 | 2.00x |" in markdown
    assert "| stand-in | 1 | 1 | 0.0000 | 1.0000 |" in markdown
    # Without held-out files or timestamps, the measures are skipped with a note.
    bare = H.HistoryBenchmark(str(tmp_path / "none"), H.Splits([("u1", "i1", None)], [], [("u1", "i2", None)]), 10,
                              30, "hash")
    assert len(bare.notes) == 3 and bare.measure("stand-in", model) == {"name": "stand-in"}


def test_rating_variants_run_each_form_with_and_without_refit_untuned():
    planned = quality.runs(["mf", "mlp", "ease"], rating_variants=True)
    assert [r.label for r in planned] == [
        "mf", "mf (seeds' form, no refit)", "mf (seeds' form, refit)", "mf (implicit term, no refit)",
        "mf (implicit term, refit)", "mlp", "ease"]  # mlp has no implicit term: no variants; ease ranks
    seeds = planned[1]
    config = quality._pipeline_config("/data", "/out", seeds, "hash", quality.TrainingConfig(epochs=3))
    assert (config.training.model, config.training.rating_history, config.training.rating_refit,
            config.training.epochs, config.tune) == ("mf", "off", False, 3, False)
    assert config.output_dir == "/out/mf__seeds__form__no_refit"
    default = quality._pipeline_config("/data", "/out", planned[0], "hash", quality.TrainingConfig())
    assert default.tune is None and default.training.rating_history == "auto" and default.training.rating_refit
    assert len({r.slug for r in planned}) == len(planned)
    assert [r.label for r in quality.runs(["mf"])] == ["mf"]


@pytest.fixture(scope="module")
def benchmark_run(tiny_data, tmp_path_factory):
    """One `recsys benchmark` on the tiny sample with a rating model and a ranking model (EASE: the history
    section); returns (output directory, printed text)."""
    out = tmp_path_factory.mktemp("benchmark") / "bench"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli.main(["benchmark", "--data-root", tiny_data, "--models", "mf,ease", "--epochs", "4",
                         "--output-dir", str(out)]) == 0
    return out, printed.getvalue()


@pytest.mark.slow
def test_benchmark_command_compares_a_model_with_the_references(benchmark_run):
    out, printed = benchmark_run
    result = json.loads((out / quality.JSON_FILE).read_text())
    rows = _by_name(result["rows"])
    assert {"mf", "ease", "most popular", "ItemKNN", "EASE", "iALS", "global mean", "user+item biases",
            "SVD-style"} <= set(rows)
    assert result["split"] == "user-time"  # auto: the tiny sample has timestamps
    assert result["held_out_interactions"] >= 300 and result["users"] >= 100
    # Scored from train + validation (what the weights were fitted on), references fitted on the same pairs.
    assert result["scored_from"] == quality.HISTORY_BEFORE_EVAL and rows["mf"]["note"].startswith(quality.VIA)
    # mf ran as a user gets it: the budgeted Tuner first (its time reported beside the Trainer's); ease has none.
    assert "s before the Trainer" in rows["mf"]["note"] and rows["ease"]["note"] == quality.VIA
    assert result["train_interactions"] < result["history_interactions"]
    mf = rows["mf"]
    assert mf["kind"] == quality.MODEL and 0 < mf["recall"] <= 1 and 0 < mf["coverage"] <= 1
    assert mf["train_s"] is not None and 0 < mf["train_s"] < mf["wall_s"]
    assert 0 < mf["rmse"] < 1.1 * rows["global mean"]["rmse"]  # 4 epochs: a sane rating model, not a tuned one
    assert rows["EASE"]["recall"] > rows["most popular"]["recall"] > 0
    assert rows["ease"]["recall"] > 1.5 * rows["most popular"]["recall"]
    markdown = (out / quality.MARKDOWN_FILE).read_text()
    assert "| mf | model |" in markdown and "train + validation interactions" in markdown
    assert (out / quality.PNG_FILE).stat().st_size > 1000
    assert "Recall@10" in printed


@pytest.mark.slow
def test_benchmark_history_section_on_the_tiny_sample(benchmark_run):
    out, printed = benchmark_run
    history = json.loads((out / quality.JSON_FILE).read_text())["history"]
    assert [m["name"] for m in history["models"]] == ["ease"]  # ranking models only
    assert history["next_users"] == 300 and history["sessions"] == 300 and not history["notes"]
    ease = history["models"][0]
    known, sessions = ease["known_users"], ease["sessions"]
    # (a) the stored history (every split) against train + validation alone: at least as good.
    assert known["users"] == 300 and known["stored"] >= known["train_validation"] > 0.2
    # (b) unseen sessions through recommend_by_history: far above most popular, on par with known users.
    assert sessions["hit_rate"] >= 1.5 * sessions["most_popular"] > 0
    assert sessions["vs_known_users"] == pytest.approx(sessions["hit_rate"] / known["stored"])
    assert sessions["vs_known_users"] > 0.8
    # (c) fresh interactions: three of them in the request lift the next item's HitRate (measured 1.04x;
    # the sample plants static taste, so the lift is mostly not recommending the fresh items back).
    fresh = {f["j"]: f for f in ease["fresh"]}
    assert sorted(fresh) == [1, 2, 3, 4, 5] and fresh[1]["users"] > fresh[3]["users"] > 20
    assert fresh[3]["lift"] > 1.0 and fresh[3]["with"] >= fresh[3]["without_excluded"]
    markdown = (out / quality.MARKDOWN_FILE).read_text()
    assert "## History as the model's input" in markdown and "| ease | 3 |" in markdown
    assert "(b) unseen sessions" in markdown and "history section" in printed


def test_the_svd_style_reference_beats_the_bias_reference_and_picks_its_l2_on_validation(tmp_path):
    from data import synthetic
    from pipeline import svd_reference

    synthetic.generate(str(tmp_path), synthetic.SampleSpec(num_users=300, num_items=300, num_ratings=20_000, seed=4))
    with open(tmp_path / F.INTERACTIONS_FILE, newline="") as f:
        rows = [(r[F.USER_ID], r[F.ITEM_ID], float(r[F.RATING])) for r in csv.DictReader(f)]
    fold = np.arange(len(rows)) % 10
    train = [r for r, k in zip(rows, fold) if k >= 2]
    validation = [r for r, k in zip(rows, fold) if k == 1]
    held_out = [r for r, k in zip(rows, fold) if k == 0]
    mean, biases, svd = quality.rating_references(train, held_out, validation)
    print(f"RMSE: global mean {mean.rmse:.4f}, biases {biases.rmse:.4f}, {svd.name} {svd.rmse:.4f} ({svd.note})")
    assert svd.rmse < 0.97 * biases.rmse < mean.rmse
    chosen = float(svd.note.split("L2 ")[1].split()[0])
    assert chosen in svd_reference.LAMBDAS
    # Unknown ids fall back to the mean (+ the known side's bias): finite, inside the rating scale's reach.
    predicted, _ = svd_reference.fit_predict(train, validation, [("nobody", "i00001", 3.0), ("nobody", "nothing", 3.0)])
    assert np.all(np.isfinite(predicted)) and abs(predicted[1] - np.mean([r for *_, r in train + validation])) < 1e-9
