"""`recsys benchmark`: references and reports on tiny data, and one real run through the pipeline."""

import csv
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
    mean, biases = quality.rating_references(train, held_out)
    assert (mean.name, biases.name) == ("global mean", "user+item biases")
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


@pytest.mark.slow
def test_benchmark_command_compares_a_model_with_the_references(tiny_data, tmp_path, capsys):
    out = tmp_path / "bench"
    assert cli.main(["benchmark", "--data-root", tiny_data, "--models", "mf", "--epochs", "4",
                     "--output-dir", str(out)]) == 0
    result = json.loads((out / quality.JSON_FILE).read_text())
    rows = _by_name(result["rows"])
    assert {"mf", "most popular", "ItemKNN", "EASE", "iALS", "global mean", "user+item biases"} <= set(rows)
    assert result["held_out_interactions"] >= 300 and result["users"] >= 100
    mf = rows["mf"]
    assert mf["kind"] == quality.MODEL and 0 < mf["recall"] <= 1 and 0 < mf["coverage"] <= 1
    assert mf["train_s"] is not None and 0 < mf["train_s"] < mf["wall_s"]
    assert 0 < mf["rmse"] < 1.1 * rows["global mean"]["rmse"]  # 4 epochs: a sane rating model, not a tuned one
    assert rows["EASE"]["recall"] > rows["most popular"]["recall"] > 0
    assert "| mf | model |" in (out / quality.MARKDOWN_FILE).read_text()
    assert (out / quality.PNG_FILE).stat().st_size > 1000
    assert "Recall@10" in capsys.readouterr().out
