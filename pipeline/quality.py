"""`recsys benchmark`: every model through the same pipeline code, judged on the same held-out data.

Rating accuracy (RMSE, MAE) and top-k ranking (Recall@k, NDCG@k; full ranking over the catalogue with
the user's training items excluded) for each model, next to reference baselines computed on the same
split: the global mean, damped user+item biases, and (for ranking) the most popular unrated items.
Without a test file the split is leave-last-one-out: each user's newest rating is held out.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from collections import Counter, defaultdict
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from components import features as F
from components.example_gen import SPLIT_HASH, SPLIT_LAST_ONE
from components.training_config import TrainingConfig
from pipeline import local_runner
from pipeline.config import EvaluationConfig, PipelineConfig

Rating = Tuple[str, str, float]  # user, item, rating
BIAS_DAMPING = 10.0


@dataclasses.dataclass
class Row:
    name: str
    rmse: float
    mae: float
    recall: float
    ndcg: float
    wall_s: float


def _split_ratings(pipeline_root: str, split: str) -> List[Rating]:
    """The ratings ExampleGen wrote to one split (gzipped TFRecords of tf.Examples)."""
    files = tf.io.gfile.glob(f"{pipeline_root}/RatingsExampleGen/examples/*/Split-{split}/*")
    rows = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        rows.append((feature[F.USER_ID].bytes_list.value[0].decode(), feature[F.ITEM_ID].bytes_list.value[0].decode(),
                     feature[F.RATING].float_list.value[0]))
    return rows


def read_test_file(path: str) -> List[Rating]:
    with tf.io.gfile.GFile(path) as f:
        return [(r[F.USER_ID], r[F.ITEM_ID], float(r[F.RATING])) for r in csv.DictReader(f)]


def ranking_metrics(ranked: Dict[str, Sequence[str]], relevant: Dict[str, set], k: int) -> Tuple[float, float]:
    """Mean Recall@k and NDCG@k over the users with at least one relevant item."""
    recalls, ndcgs = [], []
    for user, items in relevant.items():
        top = list(ranked.get(user, []))[:k]
        gains = [1.0 / math.log2(rank + 2) for rank, item in enumerate(top) if item in items]
        ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(k, len(items))))
        recalls.append(len(gains) / min(k, len(items)))
        ndcgs.append(sum(gains) / ideal)
    if not recalls:
        return 0.0, 0.0
    return float(np.mean(recalls)), float(np.mean(ndcgs))


def _errors(predicted: Iterable[float], held_out: Sequence[Rating]) -> Tuple[float, float]:
    diff = np.asarray(list(predicted), dtype=np.float64) - np.array([r for _, _, r in held_out])
    return float(np.sqrt(np.mean(diff ** 2))), float(np.mean(np.abs(diff)))


def baselines(train: Sequence[Rating], held_out: Sequence[Rating], relevant: Dict[str, set], k: int) -> List[Row]:
    started = time.monotonic()
    mean = float(np.mean([r for _, _, r in train]))
    rows = [Row("global mean (baseline)", *_errors([mean] * len(held_out), held_out), 0.0, 0.0,
                time.monotonic() - started)]
    item_sum, item_n = defaultdict(float), Counter()
    for _, item, r in train:
        item_sum[item] += r - mean
        item_n[item] += 1
    item_bias = {i: item_sum[i] / (BIAS_DAMPING + item_n[i]) for i in item_n}
    user_sum, user_n, seen = defaultdict(float), Counter(), defaultdict(set)
    for user, item, r in train:
        user_sum[user] += r - mean - item_bias[item]
        user_n[user] += 1
        seen[user].add(item)
    user_bias = {u: user_sum[u] / (BIAS_DAMPING + user_n[u]) for u in user_n}
    predicted = [mean + user_bias.get(u, 0.0) + item_bias.get(i, 0.0) for u, i, _ in held_out]
    popular = [item for item, _ in item_n.most_common()]
    ranked = {u: [i for i in popular if i not in seen[u]][:k] for u in relevant}
    rows.append(Row("user+item biases (baseline; ranking: most popular unrated)", *_errors(predicted, held_out),
                    *ranking_metrics(ranked, relevant, k), time.monotonic() - started))
    return rows


def evaluate_model(model_dir: str, held_out: Sequence[Rating], relevant: Dict[str, set], k: int,
                   batch: int = 256) -> Tuple[float, float, float, float]:
    model = tf.saved_model.load(model_dir)
    predict, recommend = model.signatures[F.PREDICT], model.signatures[F.RECOMMEND]
    predicted = []
    for start in range(0, len(held_out), 4096):
        chunk = held_out[start:start + 4096]
        out = predict(user_id=tf.constant([u for u, _, _ in chunk]), item_id=tf.constant([i for _, i, _ in chunk]))
        predicted.extend(out[F.RATING_OUTPUT].numpy().tolist())
    users, ranked = sorted(relevant), {}
    for start in range(0, len(users), batch):
        chunk = users[start:start + batch]
        out = recommend(user_id=tf.constant(chunk), k=tf.constant(k), exclude_rated=tf.constant(True))
        for user, items in zip(chunk, out[F.ITEMS_OUTPUT].numpy()):
            ranked[user] = [i.decode() for i in items]
    return (*_errors(predicted, held_out), *ranking_metrics(ranked, relevant, k))


def run(data_root: str, output_dir: str, models: Sequence[str], test_file: Optional[str] = None, k: int = 10,
        training: TrainingConfig = TrainingConfig()) -> Dict:
    rows: List[Row] = []
    held_out: List[Rating] = []
    train: List[Rating] = []
    for name in models:
        config = PipelineConfig(
            data_root=data_root, output_dir=os.path.join(output_dir, name),
            split=SPLIT_HASH if test_file else SPLIT_LAST_ONE,
            training=dataclasses.replace(training, model=name),
            evaluation=EvaluationConfig(rmse_upper_bound=100.0),  # measure every model, bless none out
        )
        print(f"== {name}: training through the pipeline", flush=True)
        started = time.monotonic()
        local_runner.run(config, quiet=True)
        wall = time.monotonic() - started
        if not held_out:
            train = _split_ratings(config.pipeline_root, "train")
            held_out = read_test_file(test_file) if test_file else _split_ratings(config.pipeline_root, "eval")
            relevant = defaultdict(set)
            for user, item, _ in held_out:
                relevant[user].add(item)
        versions = sorted(tf.io.gfile.listdir(config.serving_dir), key=lambda v: int(v.strip("/")))
        model_dir = f"{config.serving_dir}/{versions[-1].strip('/')}"
        rows.append(Row(name, *evaluate_model(model_dir, held_out, relevant, k), wall))
    rows.extend(baselines(train, held_out, relevant, k))
    return {"data_root": data_root, "test_file": test_file, "k": k, "held_out_ratings": len(held_out),
            "protocol": "test file" if test_file else SPLIT_LAST_ONE,
            "rows": [dataclasses.asdict(r) for r in rows]}


def to_markdown(result: Dict) -> str:
    k = result["k"]
    lines = [f"Held-out: {result['held_out_ratings']} ratings ({result['protocol']}); ranking over the full "
             f"catalogue with training items excluded.", "",
             f"| model | RMSE | MAE | Recall@{k} | NDCG@{k} | wall s |", "|---|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['name']} | {r['rmse']:.4f} | {r['mae']:.4f} | {r['recall']:.4f} | {r['ndcg']:.4f} | "
                     f"{r['wall_s']:.1f} |")
    return "\n".join(lines) + "\n"


def write(result: Dict, out_dir: str) -> Tuple[str, str]:
    tf.io.gfile.makedirs(out_dir)
    paths = (f"{out_dir}/benchmark.json", f"{out_dir}/benchmark.md")
    for path, text in zip(paths, (json.dumps(result, indent=2), to_markdown(result))):
        with tf.io.gfile.GFile(path + ".tmp", "w") as f:
            f.write(text)
        tf.io.gfile.rename(path + ".tmp", path, overwrite=True)
    return paths
