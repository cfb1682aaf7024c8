"""Big catalogues (issue 18): approximate top-k at a million items, and the ranking models above EASE's limit.

Usage: .venv/bin/python bench/big_catalogue.py [--only ann|models] [--work-dir output/bench/big]
       [--results-dir bench/results] [--items 1000000] [--model-interactions 1000000]

ann    (bench/results/big_catalogue_ann.json): an iALS model over ITEMS items (item factors drawn in clusters with
       long-tailed norms, as trained factors are; users' histories drawn from a few clusters each), its `recommend`
       answered in-process two ways by the code the exported signature runs: brute force (fold-in, every item
       scored, the user's items excluded, top 10) and the ScaNN index the Trainer builds with `--ann scann`
       (components/ann.py: fold-in, index search, exclusions). Latency of one user per call, p50/p99, and the
       index's Recall@10 against the brute-force lists, same users, same run.
models (bench/results/big_catalogue_models.json): the movie generator scaled to 100,000 items (1M interactions,
       20,000 users), one pipeline run per model (`ials`, `two_tower`, and `auto`, which fits both and keeps the
       better on validation) on the same data and split: the ranking gate's eval Recall@10 beside most popular
       (same run), the Trainer's and the pipeline's wall time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Dict, List

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from bench import common  # noqa: E402

K = 10
ANN_TARGET_P50_MS, ANN_TARGET_RECALL = 5.0, 0.95
MODEL_TARGET_LIFT, TRAINER_TARGET_S = 1.5, 600.0


def _clustered_factors(num_items: int, dim: int, clusters: int, rng) -> np.ndarray:
    centres = rng.normal(size=(clusters, dim)).astype(np.float32) / np.sqrt(dim)
    members = rng.integers(0, clusters, num_items)
    vectors = centres[members] + 0.6 * rng.normal(size=(num_items, dim)).astype(np.float32) / np.sqrt(dim)
    norms = np.exp(0.5 * rng.normal(size=num_items)).astype(np.float32)  # popular items: longer vectors
    return vectors * norms[:, None], members


def ann_benchmark(num_items: int, users: int = 500, history: int = 20, dim: int = 64, seed: int = 0,
                  leaves_to_search: int = 0, reorder: int = 0) -> Dict:
    import tensorflow as tf

    from components import ann
    from components import features as F
    from components import catalog as catalog_lib
    from components.models import history as history_lib
    from components.models import ials
    from components.models import topk

    rng = np.random.default_rng(seed)
    factors, members = _clustered_factors(num_items, dim, max(10, num_items // 500), rng)
    by_cluster = np.argsort(members, kind="stable")
    starts = np.searchsorted(members[by_cluster], np.arange(members.max() + 2))
    pairs = []
    for user in range(users):  # a few clusters of taste each
        for cluster in rng.integers(0, members.max() + 1, 3):
            pool = by_cluster[starts[cluster]:starts[cluster + 1]]
            pairs += [(user, int(i)) for i in rng.choice(pool, min(len(pool), history // 3 + 1), replace=False)]
    row_splits, seen = catalog_lib.ragged_rows(np.array(pairs, np.int64), users + 1)
    model = ials.Ials(factors, regularization=1.0, alpha=10.0, row_splits=row_splits, history=seen)
    started = time.perf_counter()
    model.ann_index = ann.build(factors, leaves_to_search=leaves_to_search, reorder=reorder)
    build_s = time.perf_counter() - started
    candidates = {F.ITEM_INDEX: tf.range(num_items, dtype=tf.int64)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64)])
    def exact(user_index):  # components/signatures.py's recommend, brute force
        scores = model.score_all_items(user_index, candidates)
        scores = topk.exclude_rows(scores, user_index, model.history_row_splits, model.history_items)
        return tf.math.top_k(scores, k=K).indices

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64)])
    def approximate(user_index):  # components/signatures.py's approximate_recommend
        history_rows = model.stored_history(user_index)
        queries = model.query_vectors(history_rows, user_index)
        excluded = history_lib.from_ragged(user_index, model.history_row_splits, model.history_items)
        return ann.top_k_excluding(model.ann_index, queries, tf.constant(K, tf.int64), excluded)[0]

    all_users = np.arange(users, dtype=np.int64)
    found = np.concatenate([approximate(tf.constant(all_users[s:s + 100])).numpy() for s in range(0, users, 100)])
    truth = np.concatenate([exact(tf.constant(all_users[s:s + 100])).numpy() for s in range(0, users, 100)])
    recall = float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth)]))
    excluded_leak = int(sum(len(set(found[u]) & set(seen[row_splits[u]:row_splits[u + 1]])) for u in range(users)))
    order = iter(np.random.default_rng(seed + 1).integers(0, users, 10_000))

    def one(call):
        return lambda: call(tf.constant([next(order)], tf.int64)).numpy()

    brute = common.latency_stats(one(exact), requests=200)
    approx = common.latency_stats(one(approximate), requests=500)
    return {"items": num_items, "dim": dim, "users": users, "history_per_user": float(np.diff(row_splits).mean()),
            "index_build_s": round(build_s, 2), "leaves": int(model.ann_index.num_leaves.numpy()),
            "leaves_to_search": int(model.ann_index.leaves_to_search.numpy()),
            "reorder": int(model.ann_index.reorder.numpy()),
            "recall_at_10_vs_brute_force": round(recall, 4), "seen_items_returned": excluded_leak,
            "brute_force": brute, "scann": approx, "p50_ratio": round(approx["p50_ms"] / brute["p50_ms"], 4),
            "targets": {"p50_ms": ANN_TARGET_P50_MS, "recall": ANN_TARGET_RECALL}}


def models_benchmark(work_dir: str, interactions: int, items: int, users: int, models: List[str]) -> Dict:
    from components.training_config import TrainingConfig
    from data import synthetic
    from pipeline import config as C
    from pipeline import local_runner, run_summary

    data = os.path.join(work_dir, f"data_{interactions}_{items}")
    if not os.path.exists(os.path.join(data, "interactions.csv")):
        synthetic.generate(data, synthetic.SampleSpec(num_ratings=interactions, num_users=users, num_items=items))
    size = os.path.getsize(os.path.join(data, "interactions.csv"))
    rows = []
    for name in models:
        out = os.path.join(work_dir, f"out_{name}")
        config = C.PipelineConfig(data_root=data, output_dir=out, training=TrainingConfig(model=name),
                                  beam_args=tuple(C.default_beam_args(size, os.cpu_count() or 1)))
        print(f"== {name}: pipeline on {data}", flush=True)
        started = time.monotonic()
        windows = local_runner.run(config, quiet=True)
        wall = time.monotonic() - started
        summary = run_summary.latest(config)
        overall = {key: summary.ranking[key]["overall"] for key in ("model", "most_popular")}
        trainer = next((end - start for component, (start, end) in windows.items() if component == "Trainer"), None)
        rows.append({"model": name, "recall": overall["model"]["recall"], "ndcg": overall["model"]["ndcg"],
                     "most_popular_recall": overall["most_popular"]["recall"], "users": overall["model"]["users"],
                     "lift": overall["model"]["recall"] / max(1e-9, overall["most_popular"]["recall"]),
                     "trainer_s": None if trainer is None else round(trainer, 1), "pipeline_s": round(wall, 1),
                     "blessed": summary.blessed})
        print(f"   {name}: eval Recall@{K} {rows[-1]['recall']:.4f} (most popular {rows[-1]['most_popular_recall']:.4f}),"
              f" Trainer {rows[-1]['trainer_s']} s, pipeline {wall:.0f} s", flush=True)
    return {"interactions": interactions, "items": items, "users": users, "rows": rows,
            "targets": {"lift": MODEL_TARGET_LIFT, "trainer_s": TRAINER_TARGET_S}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["ann", "models"])
    parser.add_argument("--work-dir", default=os.path.join("output", "bench", "big"))
    parser.add_argument("--results-dir", default=common.RESULTS_DIR)
    parser.add_argument("--items", type=int, default=1_000_000, help="catalogue of the ann part")
    parser.add_argument("--model-interactions", type=int, default=1_000_000)
    parser.add_argument("--model-items", type=int, default=100_000)
    parser.add_argument("--model-users", type=int, default=20_000)
    parser.add_argument("--models", nargs="+", default=["ials", "two_tower", "auto"])
    parser.add_argument("--ann-leaves-to-search", type=int, default=0, help="0: components/ann.py's default")
    parser.add_argument("--ann-reorder", type=int, default=0, help="0: components/ann.py's default")
    args = parser.parse_args(argv)
    command = "bench/big_catalogue.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.only in (None, "ann"):
        result = ann_benchmark(args.items, leaves_to_search=args.ann_leaves_to_search, reorder=args.ann_reorder)
        print(f"ann at {args.items:,} items: ScaNN p50 {result['scann']['p50_ms']} ms, brute force "
              f"{result['brute_force']['p50_ms']} ms, Recall@10 vs brute force {result['recall_at_10_vs_brute_force']}",
              flush=True)
        common.write_json(os.path.join(args.results_dir, "big_catalogue_ann.json"),
                          {"benchmark": "big_catalogue_ann", "command": command, "machine": common.machine(), **result})
    if args.only in (None, "models"):
        os.makedirs(args.work_dir, exist_ok=True)
        result = models_benchmark(args.work_dir, args.model_interactions, args.model_items, args.model_users,
                                  args.models)
        common.write_json(os.path.join(args.results_dir, "big_catalogue_models.json"),
                          {"benchmark": "big_catalogue_models", "command": command, "machine": common.machine(),
                           **result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
