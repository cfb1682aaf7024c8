"""`recsys benchmark`: every model through the real pipeline, judged on the same held-out data.

Each model is trained by `local_runner.run` on its own PipelineConfig (same data, same split) and
evaluated through the SavedModel its Trainer exported: Recall@k, NDCG@k and catalogue coverage of its
top-k lists over the whole catalogue, and RMSE/MAE where it predicts ratings. Beside the models, the
references of components/ranking_eval (most popular, ItemKNN, EASE; iALS from the `implicit` library when
it is importable) and two rating references (global mean, damped user+item biases) are computed in the
same run from the same training split. The protocol is components/ranking_eval's: every held-out
interaction (the pipeline's eval split, or --test-file) is relevant; each user's training items are the
only ones excluded. The metric code lives in ranking_eval; this module orchestrates and reports.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import time
from collections import Counter, defaultdict
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
import tensorflow as tf

from components import features as F
from components import ranking_eval as R
from components.atomic_io import atomic_write
from components.contract import DataContract, load_or_infer, read_rows
from components.example_gen import SPLIT_HASH
from components.training_config import TrainingConfig
from pipeline import local_runner
from pipeline.config import EvaluationConfig, PipelineConfig

Interaction = Tuple[str, str, Optional[float]]  # user, item, rating (None when the data has none)
BIAS_DAMPING = 10.0
TRAINER = "Trainer"  # the Trainer's component id: its wall time is a model's training time
# ItemKNN and EASE hold item x item matrices: beyond this catalogue size the references are skipped.
REFERENCE_MAX_ITEMS = 20_000
# How a model's lists were produced (which items were kept out of them).
VIA = f"{F.RECOMMEND_FILTERED}: the user's train items excluded"
MODEL, REFERENCE = "model", "reference"
JSON_FILE, MARKDOWN_FILE, PNG_FILE = "benchmark.json", "benchmark.md", "benchmark.png"


@dataclasses.dataclass
class Row:
    name: str
    kind: str  # MODEL or REFERENCE
    recall: Optional[float] = None
    ndcg: Optional[float] = None
    coverage: Optional[float] = None
    rmse: Optional[float] = None
    mae: Optional[float] = None
    train_s: Optional[float] = None  # models: the Trainer component's wall time; references: fitting
    wall_s: Optional[float] = None  # models: the whole pipeline run; references: fitting + ranking
    note: str = ""


# --- data --------------------------------------------------------------------------------------------

def split_interactions(pipeline_root: str, split: str) -> List[Interaction]:
    """The interactions ExampleGen wrote to one split (gzipped TFRecords of tf.Examples)."""
    files = tf.io.gfile.glob(f"{pipeline_root}/RatingsExampleGen/examples/*/Split-{split}/*")
    rows = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        rating = feature[F.RATING].float_list.value if F.RATING in feature else []
        rows.append((feature[F.USER_ID].bytes_list.value[0].decode(), feature[F.ITEM_ID].bytes_list.value[0].decode(),
                     float(rating[0]) if rating else None))
    return rows


def read_test_file(path: str) -> List[Interaction]:
    with tf.io.gfile.GFile(path) as f:
        return [(r[F.USER_ID], r[F.ITEM_ID], float(r[F.RATING]) if r.get(F.RATING) not in (None, "") else None)
                for r in csv.DictReader(f)]


def read_catalogue(data_root: str, contract: Optional[DataContract] = None) -> List[str]:
    """Every item id of the catalogue: the items file's rows, or without one the items the interactions name."""
    contract = contract or load_or_infer(data_root)[0]
    if contract.items_file:
        path, column = os.path.join(data_root, contract.items_file), contract.columns.item
    else:
        path, column = os.path.join(data_root, contract.interactions_file), contract.columns.item
    return sorted({str(row[column]) for row in read_rows(path)})


def _rated(interactions: Sequence[Interaction]) -> List[Interaction]:
    return [r for r in interactions if r[2] is not None]


def _errors(predicted: Sequence[float], held_out: Sequence[Interaction]) -> Tuple[Optional[float], Optional[float]]:
    if not held_out:
        return None, None
    diff = np.asarray(predicted, dtype=np.float64) - np.array([r for _, _, r in held_out], dtype=np.float64)
    return float(np.sqrt(np.mean(diff ** 2))), float(np.mean(np.abs(diff)))


# --- references ----------------------------------------------------------------------------------------

def rating_references(train: Sequence[Interaction], held_out: Sequence[Interaction]) -> List[Row]:
    """Global mean and damped user+item biases: what a rating model must beat on RMSE."""
    train, held_out = _rated(train), _rated(held_out)
    if not train or not held_out:
        return []
    started = time.monotonic()
    mean = float(np.mean([r for _, _, r in train]))
    global_mean = Row("global mean", REFERENCE)
    global_mean.rmse, global_mean.mae = _errors([mean] * len(held_out), held_out)
    global_mean.train_s = global_mean.wall_s = time.monotonic() - started
    item_sum, item_n = defaultdict(float), Counter()
    for _, item, r in train:
        item_sum[item] += r - mean
        item_n[item] += 1
    item_bias = {i: item_sum[i] / (BIAS_DAMPING + item_n[i]) for i in item_n}
    user_sum, user_n = defaultdict(float), Counter()
    for user, item, r in train:
        user_sum[user] += r - mean - item_bias[item]
        user_n[user] += 1
    user_bias = {u: user_sum[u] / (BIAS_DAMPING + user_n[u]) for u in user_n}
    biases = Row("user+item biases", REFERENCE)
    biases.rmse, biases.mae = _errors([mean + user_bias.get(u, 0.0) + item_bias.get(i, 0.0) for u, i, _ in held_out],
                                      held_out)
    biases.train_s = biases.wall_s = time.monotonic() - started
    return [global_mean, biases]


def ranking_references(train: R.Interactions, relevant: Dict[str, Set[str]], k: int) -> List[Row]:
    """Most popular, ItemKNN, EASE and (when importable) iALS, fitted on `train`, ranked like the models."""
    users = sorted(relevant)
    big = len(train.items) > REFERENCE_MAX_ITEMS
    skip = f"skipped: {len(train.items)} items exceed the {REFERENCE_MAX_ITEMS} items of an item x item matrix"
    candidates: List[Tuple[str, Optional[Callable[[], R.Scorer]], str]] = [
        ("most popular", lambda: R.most_popular(train), ""),
        (f"ItemKNN (cosine, {R.ITEM_KNN_DEFAULT_NEIGHBOURS} neighbours)",
         None if big else (lambda: R.item_knn(train)), skip if big else ""),
        (f"EASE (lambda {R.EASE_DEFAULT_LAMBDA:g})", None if big else (lambda: R.ease(train)), skip if big else ""),
        (f"iALS (implicit, {R.IALS_DEFAULT_FACTORS} factors, untuned)", (lambda: R.ials(train)) if R.ials_available()
         else None, "" if R.ials_available() else "not installed (the `implicit` library is not importable)"),
    ]
    rows = []
    for name, fit, note in candidates:
        if fit is None:
            rows.append(Row(name, REFERENCE, note=note))
            continue
        started = time.monotonic()
        scorer = fit()
        fitted = time.monotonic()
        ranked = R.top_k(train, scorer, users, k)
        rows.append(_ranking_row(Row(name, REFERENCE, train_s=fitted - started, note=note), ranked, relevant,
                                 len(train.items), k))
        rows[-1].wall_s = time.monotonic() - started
    return rows


def _ranking_row(row: Row, ranked: Dict[str, List[str]], relevant: Dict[str, Set[str]], num_items: int,
                 k: int) -> Row:
    metrics = R.ranking_metrics(ranked, relevant, k)
    row.recall, row.ndcg, row.coverage = metrics["recall"], metrics["ndcg"], R.coverage(ranked, num_items, k)
    return row


# --- models ---------------------------------------------------------------------------------------------

def trained_model_dir(pipeline_root: str) -> str:
    """The SavedModel the latest Trainer run exported (evaluated whether or not the gates blessed it)."""
    dirs = tf.io.gfile.glob(f"{pipeline_root}/{TRAINER}/model/*/Format-Serving")
    if not dirs:
        raise FileNotFoundError(f"no Trainer model under {pipeline_root}/{TRAINER}/model")
    return max(dirs, key=lambda d: int(d.rstrip("/").split("/")[-2]))


def model_lists(model, users: Sequence[str], train_items: Dict[str, Set[str]], k: int) -> Dict[str, List[str]]:
    """Each user's top-k from the SavedModel, only the user's train items excluded (the gate's own lists)."""
    return R.saved_model_top_k(model, users, train_items, k)


def model_errors(model, held_out: Sequence[Interaction]) -> Tuple[Optional[float], Optional[float]]:
    held_out = _rated(held_out)
    if F.PREDICT not in model.signatures or not held_out:
        return None, None
    predict, predicted = model.signatures[F.PREDICT], []
    for start in range(0, len(held_out), 4096):
        chunk = held_out[start:start + 4096]
        out = predict(**{F.USER_ID: tf.constant([u for u, _, _ in chunk]),
                         F.ITEM_ID: tf.constant([i for _, i, _ in chunk])})
        predicted.extend(out[F.RATING_OUTPUT].numpy().ravel().tolist())
    return _errors(predicted, held_out)


def predicts_ratings(name: str) -> bool:
    from components import models

    return not models.is_ranking(name)


def registered_models() -> List[str]:
    from components import models

    return list(models.MODELS)


# --- the run --------------------------------------------------------------------------------------------

def _pipeline_config(data_root: str, output_dir: str, name: str, split: str, training: TrainingConfig):
    evaluation = EvaluationConfig(rmse_upper_bound=100.0)  # measure every model; the gates do not matter here
    return PipelineConfig(data_root=data_root, output_dir=os.path.join(output_dir, name), split=split,
                          training=dataclasses.replace(training, model=name), evaluation=evaluation)


def run(data_root: str, output_dir: str, models: Sequence[str], test_file: Optional[str] = None, k: int = 10,
        training: TrainingConfig = TrainingConfig(), split: str = SPLIT_HASH) -> Dict:
    """Train each model through the pipeline, evaluate it and the references on the same split."""
    rows: List[Row] = []
    contract, _ = load_or_infer(data_root)
    catalogue = read_catalogue(data_root, contract)
    if not contract.has_rating:  # implicit feedback: nothing for a rating model to predict
        skipped = [name for name in models if predicts_ratings(name)]
        if skipped:
            print(f"skipping {', '.join(skipped)}: {contract.interactions_file} has no rating column", flush=True)
        models = [name for name in models if not predicts_ratings(name)]
    train: List[Interaction] = []
    held_out: List[Interaction] = []
    relevant: Dict[str, Set[str]] = {}
    train_items: Dict[str, Set[str]] = {}
    for name in models:
        config = _pipeline_config(data_root, output_dir, name, split, training)
        print(f"== {name}: training through the pipeline", flush=True)
        started = time.monotonic()
        windows = local_runner.run(config, quiet=True) or {}
        wall = time.monotonic() - started
        if not relevant:  # every run splits the same data the same way: read the split once
            train = split_interactions(config.pipeline_root, F.TRAIN_SPLIT)
            held_out = read_test_file(test_file) if test_file else split_interactions(config.pipeline_root,
                                                                                      F.EVAL_SPLIT)
            relevant = R.relevant_by_user((u, i) for u, i, _ in held_out)
            train_items = R.relevant_by_user((u, i) for u, i, _ in train)
        trainer = windows.get(TRAINER)
        model = tf.saved_model.load(trained_model_dir(config.pipeline_root))
        ranked = model_lists(model, sorted(relevant), train_items, k)
        row = _ranking_row(Row(name, MODEL, train_s=trainer[1] - trainer[0] if trainer else None, wall_s=wall,
                               note=VIA), ranked, relevant, len(catalogue), k)
        if predicts_ratings(name):
            row.rmse, row.mae = model_errors(model, held_out)
        rows.append(row)
        print(f"   {name}: Recall@{k} {row.recall:.4f}, NDCG@{k} {row.ndcg:.4f}", flush=True)
    interactions = R.Interactions.from_pairs([(u, i) for u, i, _ in train], catalogue)
    rows.extend(ranking_references(interactions, relevant, k))
    rows.extend(rating_references(train, held_out))
    return {"data_root": data_root, "test_file": test_file, "k": k, "split": split,
            "held_out": "test file" if test_file else f"pipeline {F.EVAL_SPLIT} split ({split})",
            "held_out_interactions": len(held_out), "users": len(relevant), "catalogue": len(catalogue),
            "train_interactions": len(train), "rows": [dataclasses.asdict(r) for r in rows]}


# --- reports --------------------------------------------------------------------------------------------

def _fmt(value, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def to_markdown(result: Dict) -> str:
    k = result["k"]
    lines = [
        f"Held-out: {result['held_out_interactions']} interactions of {result['users']} users "
        f"({result['held_out']}); trained on {result['train_interactions']} interactions; every held-out "
        f"interaction is relevant; ranking over the full catalogue of {result['catalogue']} items with only "
        f"the user's train items excluded. Models: trained by the pipeline, evaluated through the SavedModel "
        f"their Trainer exported; train s = the Trainer component's wall time, run s = the whole pipeline run. "
        f"References: fitted on the same train split; train s = fitting, run s = fitting + ranking.", "",
        f"| | kind | Recall@{k} | NDCG@{k} | coverage@{k} | RMSE | MAE | train s | run s | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['name']} | {r['kind']} | {_fmt(r['recall'])} | {_fmt(r['ndcg'])} | "
                     f"{_fmt(r['coverage'], 3)} | {_fmt(r['rmse'])} | {_fmt(r['mae'])} | {_fmt(r['train_s'], 1)} | "
                     f"{_fmt(r['wall_s'], 1)} | {r['note']} |")
    return "\n".join(lines) + "\n"


def to_png(result: Dict) -> bytes:
    """Grouped bars of Recall@k and NDCG@k per model and reference (rows without ranking metrics left out)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = [r for r in result["rows"] if r["recall"] is not None]
    k = result["k"]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rows) + 2), 4.5))
    x = np.arange(len(rows))
    for offset, key, label in ((-0.2, "recall", f"Recall@{k}"), (0.2, "ndcg", f"NDCG@{k}")):
        bars = ax.bar(x + offset, [r[key] for r in rows], width=0.4, label=label)
        for bar, r in zip(bars, rows):
            bar.set_hatch("" if r["kind"] == MODEL else "//")
    ax.set_xticks(x)
    ax.set_xticklabels([r["name"].split(" (")[0] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("mean over held-out users")
    ax.set_title(f"Top-{k} over the full catalogue ({result['held_out']}); hatched: references")
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def write(result: Dict, out_dir: str) -> Tuple[str, str, str]:
    """benchmark.json, benchmark.md and benchmark.png under out_dir, each written atomically."""
    tf.io.gfile.makedirs(out_dir)
    paths = tuple(f"{out_dir.rstrip('/')}/{name}" for name in (JSON_FILE, MARKDOWN_FILE, PNG_FILE))
    for path, data in zip(paths, (json.dumps(result, indent=2), to_markdown(result), to_png(result))):
        atomic_write(path, data)
    return paths
