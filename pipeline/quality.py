"""`recsys benchmark`: every model through the real pipeline, judged on the same held-out data.

Each model is trained by `local_runner.run` on its own PipelineConfig (same data, same split) and
evaluated through the SavedModel its Trainer exported: Recall@k, NDCG@k and catalogue coverage of its
top-k lists over the whole catalogue, and RMSE/MAE where it predicts ratings. Beside the models, the
references of components/ranking_eval (most popular, ItemKNN, EASE; iALS from the `implicit` library when
it is importable) and three rating references (global mean, damped user+item biases, an SVD-style biased MF:
pipeline/svd_reference.py) are computed in the same run. With `rating_variants`, each rating model that can
carry SVD++'s implicit term is also run in each form (the seeds' form, the implicit term) with and without
the refit on train + validation, without the Tuner, beside its default (tuned, form and refit as configured). The protocol is components/ranking_eval's: every held-out interaction is relevant; each user is
scored from a history and only that history is excluded. The history is the user's train + validation
interactions when the held-out data is the pipeline's eval split, and every split the pipeline saw (train +
validation + eval) with --test-file (the held-out data is outside the pipeline, so the model scores from the
user's whole history, as the references do); the models get it through `recommend_by_history`
(use_stored_history false), and the references are fitted on the same (user, item) pairs and exclude the
same items. The history measures (sessions, fresh interactions, stored vs train + validation history) are
pipeline/history_benchmark.py's. The metric code lives in ranking_eval; this module orchestrates and reports.
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

from components import ann
from components import features as F
from components import ranking_eval as R
from components.atomic_io import atomic_write
from components.contract import DataContract, load_or_infer, read_rows
from components.example_gen import SPLIT_HASH
from components.training_config import RATING_HISTORY_OFF, RATING_HISTORY_ON, TrainingConfig
from pipeline import local_runner, svd_reference
from pipeline.config import EvaluationConfig, PipelineConfig

Interaction = Tuple[str, str, Optional[float]]  # user, item, rating (None when the data has none)
BIAS_DAMPING = 10.0
TRAINER = "Trainer"  # the Trainer's component id: its wall time is a model's training time
TUNER = "Tuner"  # the Tuner's component id (a rating model's default search runs before the Trainer)
# ItemKNN and EASE hold item x item matrices: beyond this catalogue size the references are skipped.
REFERENCE_MAX_ITEMS = 20_000
# How a model's lists were produced: what each user was scored from (and what was kept out of the list).
HISTORY_BEFORE_EVAL = "train + validation"  # the pipeline's eval split is the held-out data
HISTORY_EVERY_SPLIT = "train + validation + eval"  # --test-file: the held-out data is outside the pipeline


def via(history: str = HISTORY_BEFORE_EVAL) -> str:
    return f"{F.RECOMMEND_BY_HISTORY}: scored from and excluding the user's {history} items"


VIA = via()
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

def split_records(pipeline_root: str, split: str) -> List[Tuple[str, str, Optional[float], Optional[int]]]:
    """(user, item, rating, timestamp) of what ExampleGen wrote to one split (gzipped TFRecords of tf.Examples);
    rating and timestamp are None when the data has none."""
    files = tf.io.gfile.glob(f"{pipeline_root}/RatingsExampleGen/examples/*/Split-{split}/*")
    rows = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        rating = feature[F.RATING].float_list.value if F.RATING in feature else []
        when = feature[F.TIMESTAMP].int64_list.value if F.TIMESTAMP in feature else []
        rows.append((feature[F.USER_ID].bytes_list.value[0].decode(), feature[F.ITEM_ID].bytes_list.value[0].decode(),
                     float(rating[0]) if rating else None, int(when[0]) if when else None))
    return rows


def split_interactions(pipeline_root: str, split: str) -> List[Interaction]:
    """The interactions ExampleGen wrote to one split (gzipped TFRecords of tf.Examples)."""
    return [(u, i, r) for u, i, r, _ in split_records(pipeline_root, split)]


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

def bias_references(train: Sequence[Interaction], held_out: Sequence[Interaction],
                    validation: Sequence[Interaction] = ()) -> List[Row]:
    """Global mean and damped user+item biases, fitted on train + validation (as the rating models once refitted):
    what every rating model must beat on RMSE."""
    train, held_out, validation = _rated(train), _rated(held_out), _rated(validation)
    if not train or not held_out:
        return []
    fitted_on = train + validation
    started = time.monotonic()
    mean = float(np.mean([r for _, _, r in fitted_on]))
    global_mean = Row("global mean", REFERENCE)
    global_mean.rmse, global_mean.mae = _errors([mean] * len(held_out), held_out)
    global_mean.train_s = global_mean.wall_s = time.monotonic() - started
    item_sum, item_n = defaultdict(float), Counter()
    for _, item, r in fitted_on:
        item_sum[item] += r - mean
        item_n[item] += 1
    item_bias = {i: item_sum[i] / (BIAS_DAMPING + item_n[i]) for i in item_n}
    user_sum, user_n = defaultdict(float), Counter()
    for user, item, r in fitted_on:
        user_sum[user] += r - mean - item_bias[item]
        user_n[user] += 1
    user_bias = {u: user_sum[u] / (BIAS_DAMPING + user_n[u]) for u in user_n}
    biases = Row("user+item biases", REFERENCE)
    biases.rmse, biases.mae = _errors([mean + user_bias.get(u, 0.0) + item_bias.get(i, 0.0) for u, i, _ in held_out],
                                      held_out)
    biases.train_s = biases.wall_s = time.monotonic() - started
    return [global_mean, biases]


def rating_references(train: Sequence[Interaction], held_out: Sequence[Interaction],
                      validation: Sequence[Interaction] = ()) -> List[Row]:
    """bias_references and an SVD-style biased MF, whose L2 is chosen on validation first (pipeline/svd_reference.py)
    and which is then refitted on train + validation."""
    rows = bias_references(train, held_out, validation)
    if not rows:
        return rows
    train, held_out, validation = _rated(train), _rated(held_out), _rated(validation)
    started = time.monotonic()
    predicted, lam = svd_reference.fit_predict(train, validation, held_out)
    svd = Row("SVD-style (biased MF, ALS)", REFERENCE,
              note=f"{svd_reference.FACTORS} factors, L2 {lam} per rating chosen on validation, refitted on "
                   f"train + validation")
    svd.rmse, svd.mae = _errors(predicted, held_out)
    svd.train_s = svd.wall_s = time.monotonic() - started
    return rows + [svd]


def ranking_references(train: R.Interactions, relevant: Dict[str, Set[str]], k: int) -> List[Row]:
    """Most popular, ItemKNN, EASE and (when importable) iALS, fitted on `train` (each user's history: what the
    models are scored from), ranked like the models: each user's `train` row scored and excluded."""
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


def model_lists(model, users: Sequence[str], history: Dict[str, Set[str]], k: int) -> Dict[str, List[str]]:
    """Each user's top-k from the SavedModel, scored from and excluding `history` (the gate's own lists)."""
    return R.saved_model_top_k(model, users, history, k)


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

@dataclasses.dataclass(frozen=True)
class Run:
    """One pipeline run of the benchmark: the model, its row's label, and what differs from the defaults."""
    model: str
    label: str
    changes: Tuple[Tuple[str, object], ...] = ()  # TrainingConfig fields
    tune: Optional[bool] = None  # PipelineConfig.tune (None: the default, a budgeted search for rating models)

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() else "_" for c in self.label).strip("_")


FORM_LABELS = {RATING_HISTORY_OFF: "seeds' form", RATING_HISTORY_ON: "implicit term"}


def runs(names: Sequence[str], rating_variants: bool = False) -> List[Run]:
    """Each model as configured; with `rating_variants`, a rating model's forms x (refit, no refit) too."""
    from components import models as model_registry

    out = []
    for name in names:
        out.append(Run(name, name))
        if rating_variants and predicts_ratings(name) and model_registry.uses_rating_history(name):
            for form in (RATING_HISTORY_OFF, RATING_HISTORY_ON):
                for refit in (False, True):
                    label = f"{name} ({FORM_LABELS[form]}, {'refit' if refit else 'no refit'})"
                    out.append(Run(name, label, (("rating_history", form), ("rating_refit", refit)), tune=False))
    return out


def _pipeline_config(data_root: str, output_dir: str, run: Run, split: str, training: TrainingConfig):
    evaluation = EvaluationConfig(rmse_upper_bound=100.0)  # measure every model; the gates do not matter here
    return PipelineConfig(data_root=data_root, output_dir=os.path.join(output_dir, run.slug), split=split,
                          training=dataclasses.replace(training, model=run.model, **dict(run.changes)),
                          evaluation=evaluation, tune=run.tune)


def run(data_root: str, output_dir: str, models: Sequence[str], test_file: Optional[str] = None, k: int = 10,
        training: TrainingConfig = TrainingConfig(), split: str = SPLIT_HASH, rating_variants: bool = False) -> Dict:
    """Train each model through the pipeline, evaluate it and the references on the same split, and measure
    the ranking models' history section (pipeline/history_benchmark.py)."""
    from components import models as model_registry
    from pipeline import history_benchmark

    rows: List[Row] = []
    contract, _ = load_or_infer(data_root)
    catalogue = read_catalogue(data_root, contract)
    if not contract.has_rating:  # implicit feedback: nothing for a rating model to predict
        skipped = [name for name in models if predicts_ratings(name)]
        if skipped:
            print(f"skipping {', '.join(skipped)}: {contract.interactions_file} has no rating column", flush=True)
        models = [name for name in models if not predicts_ratings(name)]
    # Each user's history (scored from and excluded): train + validation against the eval split, every split
    # against a test file outside the pipeline.
    scope = HISTORY_EVERY_SPLIT if test_file else HISTORY_BEFORE_EVAL
    known: List[Interaction] = []
    held_out: List[Interaction] = []
    relevant: Dict[str, Set[str]] = {}
    history: Dict[str, Set[str]] = {}
    splits = None
    records: Dict[str, list] = {}
    bench = None
    for planned in runs(models, rating_variants):
        name = planned.model
        config = _pipeline_config(data_root, output_dir, planned, split, training)
        print(f"== {planned.label}: training through the pipeline", flush=True)
        started = time.monotonic()
        windows = local_runner.run(config, quiet=True) or {}
        wall = time.monotonic() - started
        if splits is None:  # every run splits the same data the same way: read the splits once
            records = {s: split_records(config.pipeline_root, s) for s in F.SPLIT_NAMES}
            splits = history_benchmark.Splits(*[[(u, i, t) for u, i, _, t in records[s]] for s in F.SPLIT_NAMES])
            parts = F.SPLIT_NAMES if test_file else (F.TRAIN_SPLIT, F.VALIDATION_SPLIT)
            known = [(u, i, r) for s in parts for u, i, r, _ in records[s]]
            held_out = read_test_file(test_file) if test_file else [(u, i, r) for u, i, r, _ in records[F.EVAL_SPLIT]]
            relevant = R.relevant_by_user((u, i) for u, i, _ in held_out)
            history = R.relevant_by_user((u, i) for u, i, _ in known)
        trainer = windows.get(TRAINER)
        ann.register_ops()  # a model with a ScaNN index needs its ops
        model = tf.saved_model.load(trained_model_dir(config.pipeline_root))
        ranked = model_lists(model, sorted(relevant), history, k)
        tuner = windows.get(TUNER)
        note = via(scope) + (f"; Tuner {tuner[1] - tuner[0]:.1f} s before the Trainer" if tuner else "")
        row = _ranking_row(Row(planned.label, MODEL, train_s=trainer[1] - trainer[0] if trainer else None,
                               wall_s=wall, note=note), ranked, relevant, len(catalogue), k)
        if predicts_ratings(name):
            row.rmse, row.mae = model_errors(model, held_out)
        rows.append(row)
        print(f"   {planned.label}: Recall@{k} {row.recall:.4f}, NDCG@{k} {row.ndcg:.4f}" +
              (f", RMSE {row.rmse:.4f}" if row.rmse is not None else ""), flush=True)
        if model_registry.is_ranking(name):
            if bench is None:
                bench = history_benchmark.HistoryBenchmark(data_root, splits, k, len(catalogue), split)
            started = time.monotonic()
            measured = bench.measure(name, model)
            print(f"   {name}: history section in {time.monotonic() - started:.0f} s: "
                  f"{history_benchmark.summary(measured)}", flush=True)
    interactions = R.Interactions.from_pairs([(u, i) for u, i, _ in known], catalogue)
    rows.extend(ranking_references(interactions, relevant, k))
    train = [(u, i, r) for u, i, r, _ in records[F.TRAIN_SPLIT]] if splits is not None else []
    validation = [(u, i, r) for u, i, r, _ in records[F.VALIDATION_SPLIT]] if splits is not None else []
    rows.extend(rating_references(train, held_out, validation))  # as the rating models: train, then + validation
    result = {"data_root": data_root, "test_file": test_file, "k": k, "split": split,
              "held_out": "test file" if test_file else f"pipeline {F.EVAL_SPLIT} split ({split})",
              "scored_from": scope, "held_out_interactions": len(held_out), "users": len(relevant),
              "catalogue": len(catalogue), "train_interactions": len(splits.train) if splits else 0,
              "history_interactions": len(known), "rows": [dataclasses.asdict(r) for r in rows]}
    if bench is not None:
        result["history"] = bench.result()
    return result


# --- reports --------------------------------------------------------------------------------------------

def _fmt(value, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def to_markdown(result: Dict) -> str:
    k = result["k"]
    scope = result.get("scored_from", HISTORY_BEFORE_EVAL)
    pairs = result.get("history_interactions", result["train_interactions"])
    lines = [
        f"Held-out: {result['held_out_interactions']} interactions of {result['users']} users "
        f"({result['held_out']}); every held-out interaction is relevant; ranking over the full catalogue of "
        f"{result['catalogue']} items, each user scored from their {scope} interactions ({pairs} "
        f"in all) with only those excluded. Models: trained by the pipeline (weights fitted on train, tuned on "
        f"validation), evaluated through the SavedModel their Trainer exported ({F.RECOMMEND_BY_HISTORY}, "
        f"use_stored_history false, that history in the request); train s = the Trainer component's wall time, "
        f"run s = the whole pipeline run. References: fitted on the same {scope} interactions; train s = fitting, "
        f"run s = fitting + ranking; the rating references (RMSE) are fitted on train + validation, as the rating "
        f"models once refitted (a row marked no refit: train only).", "",
        f"| | kind | Recall@{k} | NDCG@{k} | coverage@{k} | RMSE | MAE | train s | run s | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['name']} | {r['kind']} | {_fmt(r['recall'])} | {_fmt(r['ndcg'])} | "
                     f"{_fmt(r['coverage'], 3)} | {_fmt(r['rmse'])} | {_fmt(r['mae'])} | {_fmt(r['train_s'], 1)} | "
                     f"{_fmt(r['wall_s'], 1)} | {r['note']} |")
    text = "\n".join(lines) + "\n"
    if result.get("history"):
        from pipeline import history_benchmark

        text += "\n" + history_benchmark.to_markdown(result["history"])
    return text


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
