"""`recommend` (top-10) latency against catalogue size, and Trainer time against interactions.

Usage: .venv/bin/python bench/recommend_scaling.py [--items 1000 10000 100000 1000000] [--models mf hybrid]
       [--hybrid-max-items 100000] [--users 1000] [--history-length 20] [--work-dir output/bench/scaling]
       [--pipeline-results bench/results/pipeline_scale_100k.json bench/results/pipeline_scale_1m.json]
       [--out bench/results/recommend_scaling.json]

For each catalogue size N a model is built by components.models at num_items = N (random weights:
latency does not depend on their values), the catalogue is attached with components.signatures'
own helper, and a `recommend` signature with the exported one's inputs and outputs is saved as a
SavedModel version. Its body is signatures.recommend's: score_all_items over the whole catalogue,
seen items excluded with signatures._exclude_seen, tf.math.top_k, ids and titles gathered; only the
user-id lookup is a hash table built here instead of the Transform graph's vocabulary (also a hash
table), so no Transform run over N items is needed. Measured at concurrency 1, 10 warm-up calls:
  - in_process: the loaded SavedModel's signature called directly;
  - grpc: serving.server.build_server on the version directory, TF Serving's PredictionService stub;
  - breakdown (in-process, unsaved model): score_all_items alone, + top_k, to say where time goes.
Each row's reference is the smallest catalogue of the same run: p50 ratio against the items ratio
(linear growth: equal; log-log slope 1).
A model that scores histories (two_tower) also gets a `recommend_by_history` signature (the body of
components/signatures.py's, user and item id lookups as hash tables), measured in-process and over gRPC
with a --history-length item history in two requests: a known user whose newest items arrive in the
request (use_stored_history true: scored from and excluding the stored items and the request's) and an
anonymous session (user_id "", the request's items alone); reference: `recommend` of the same model in
the same run (by_history_p50_ratio; target: within BY_HISTORY_TARGET_RATIO).
The training rows read the Trainer's wall time and epochs from bench/run_pipelines.py's results.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import time
import warnings
from typing import Callable, Dict, List, Optional, Tuple

warnings.filterwarnings("ignore", category=FutureWarning)
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench import common  # noqa: E402
from components import catalog as catalog_lib  # noqa: E402
from components import features as F  # noqa: E402
from components import models, signatures  # noqa: E402
from components.models.base import ModelDims  # noqa: E402
from components.training_config import TrainingConfig  # noqa: E402
from data import synthetic  # noqa: E402

MODEL_NAME = "scaling"
TARGET_P50_MS = 10.0
BY_HISTORY_TARGET_RATIO = 1.5  # recommend_by_history p50 at TARGET_ITEMS at most this times recommend's
BY_HISTORY_REQUESTS = ("user + recent", "session")
TARGET_ITEMS = 100_000
# auto at 100K items fits iALS and two_tower and keeps the better on validation; this benchmark times two_tower.
DEFAULT_AT_TARGET = models.candidates(models.DEFAULT_MODEL, TARGET_ITEMS, TrainingConfig.ease_max_items)[-1]
K = 10


def user_key(i: int) -> str:
    return f"u{i:07d}"


def content_width(num_genres: int = len(synthetic.GENRES)) -> int:
    """The movie sample's item content vector: genre multi-hot (+ OOV) and the year as (z score, missing flag)."""
    return num_genres + F.OOV_BUCKETS + 2


def synthetic_catalog(num_items: int, num_users: int, content_dim: int, rated_per_user: int,
                      rng: np.random.Generator) -> catalog_lib.Catalog:
    """A catalogue of N items and each user's rated items, shaped as catalog.build returns it; each item's
    content is a sparse multi-hot and a z-scored number (what catalog.encode_content makes of genres and a year)."""
    hot = (rng.random((num_items, content_dim - 2), dtype=np.float32) < 0.12).astype(np.float32)
    hot /= np.maximum(np.linalg.norm(hot, axis=1, keepdims=True), 1e-6)  # L2-normalised, as encode_content does
    number = np.stack([rng.normal(0.0, 1.0, num_items), np.zeros(num_items)], axis=1).astype(np.float32)
    rated = [np.unique(rng.integers(0, num_items, size=min(rated_per_user, num_items))) for _ in range(num_users)]
    rated.append(np.zeros(0, np.int64))  # the OOV user's row: rated nothing
    splits = np.zeros(len(rated) + 1, np.int64)
    splits[1:] = np.cumsum([len(r) for r in rated])
    return catalog_lib.Catalog(
        item_ids=[f"i{j:07d}".encode() for j in range(num_items)],
        titles=np.array([f"Title {j}".encode() for j in range(num_items)], dtype=object),
        item_content=np.concatenate([hot, number], axis=1),
        rated_row_splits=splits,
        rated_items=np.concatenate(rated).astype(np.int64),
    )


def build_recommender(name: str, num_items: int, num_users: int, rated_per_user: int, seed: int = 7):
    """(model with catalogue and user table attached, recommend tf.function, breakdown functions,
    recommend_by_history tf.function or None when the model does not score histories)."""
    content_dim = content_width()
    rng = np.random.default_rng(seed)
    dims = ModelDims(num_users + F.OOV_BUCKETS, num_items + F.OOV_BUCKETS, content_dim, 3.5)
    config = TrainingConfig(model=name, seed=seed)
    items = synthetic_catalog(num_items, num_users, content_dim, rated_per_user, rng)
    if models.is_ranking(name):  # two_tower (EASE cannot hold a 100K-item catalogue): its model class, uniform
        # sampling, each user's rated items as the stored history it scores from
        model = models.get(name).TwoTower(dims, config, np.full(dims.num_items, 1.0 / dims.num_items),
                                          items.rated_row_splits, items.rated_items)
    else:
        model = models.get(name).build(dims, config)
    model({F.USER_INDEX: tf.constant([0], tf.int64), F.ITEM_INDEX: tf.constant([0], tf.int64),
           F.ITEM_CONTENT: tf.zeros([1, content_dim]), F.USER_CONTENT: tf.zeros([1, dims.user_content_dim])})
    signatures._attach_catalog(model, items)  # (above: builds every layer)
    model.user_table = tf.lookup.StaticHashTable(  # stands in for the Transform graph's user vocabulary
        tf.lookup.KeyValueTensorInitializer(tf.constant([user_key(i) for i in range(num_users)]),
                                            tf.range(num_users, dtype=tf.int64)),
        default_value=num_users)  # the OOV bucket, as Transform's vocabulary

    def candidates():
        return signatures._catalog_candidates(model)

    precompute = getattr(model, "item_vectors", None)  # as signatures.build: item towers run once, at export
    if precompute is not None:
        model.catalog_item_vectors = tf.Variable(precompute(candidates()), trainable=False,
                                                 name="catalog_item_vectors")

    def scores_of(users):  # as signatures.build's recommend: cached item tower, the users' attributes
        extra = {"item_vectors": model.catalog_item_vectors} if precompute is not None else {}
        if getattr(model, "USES_USER_CONTENT", False):
            extra["user_content"] = signatures._user_content(model, users)
        return model.score_all_items(users, candidates(), **extra)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=F.USER_ID),
                                  tf.TensorSpec([], tf.int32, name=F.K_INPUT),
                                  tf.TensorSpec([], tf.bool, name=F.EXCLUDE_RATED_INPUT)])
    def recommend(user_id, k, exclude_rated):  # components/signatures.py's recommend, user lookup aside
        users = model.user_table.lookup(user_id)
        num = tf.shape(model.catalog_item_ids)[0]
        scores = scores_of(users)
        scores = tf.cond(exclude_rated, lambda: signatures._exclude_seen(model, users, scores), lambda: scores)
        top = tf.math.top_k(scores, k=tf.clip_by_value(k, 0, num))
        return {
            F.ITEMS_OUTPUT: tf.gather(model.catalog_item_ids, top.indices),
            F.TITLES_OUTPUT: tf.gather(model.catalog_titles, top.indices),
            F.SCORES_OUTPUT: top.values,
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64)])
    def score_only(users):
        return scores_of(users)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64)])
    def score_top_k(users):
        return tf.math.top_k(scores_of(users), k=K).indices

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64)])
    def score_exclude_top_k(users):
        return tf.math.top_k(signatures._exclude_seen(model, users, scores_of(users)), k=K).indices

    breakdown = {"score_all_items": score_only, "score_all_items+top_k": score_top_k,
                 "score_all_items+exclude_rated+top_k": score_exclude_top_k}
    table = getattr(getattr(model, "item_embedding", None), "embeddings", None)
    # mf: the same product straight on the table, without gathering a copy of it first (two_tower has no user table)
    if table is not None and getattr(model, "user_embedding", None) is not None:
        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64)])
        def table_matmul(users):
            return tf.matmul(model.user_embedding(users), table, transpose_b=True)

        breakdown["matmul on the table, no gather"] = table_matmul
    return model, recommend, breakdown, by_history_signature(model, items)


def by_history_signature(model, items: catalog_lib.Catalog):
    """components/signatures.py's recommend_by_history for a history model (None for another): the same guards,
    history SparseTensors, unknown-id count, scoring, exclusions and top-k; the user and item id lookups are
    hash tables instead of the Transform graph's vocabularies (also hash tables)."""
    if not hasattr(model, "score_history"):
        return None
    from components.models import history as history_lib
    from serving import limits

    n = len(items.item_ids)
    model.item_table = tf.lookup.StaticHashTable(  # stands in for the Transform graph's item vocabulary
        tf.lookup.KeyValueTensorInitializer(tf.constant(items.item_ids), tf.range(n, dtype=tf.int64)), default_value=n)

    def item_indices(item_ids):  # signatures._item_indices: known ids only
        index = model.item_table.lookup(item_ids)
        return tf.boolean_mask(index, index < n)

    def mask(index):  # signatures._catalogue_mask
        return tf.scatter_nd(tf.reshape(index, [-1, 1]), tf.ones_like(index, tf.bool), [n])

    @tf.function(input_signature=signatures.BY_HISTORY_INPUTS)
    def recommend_by_history(user_id, history_item_ids, history_weights, use_stored_history, k, exclude_item_ids,
                             allow_item_ids):
        user_id, history_item_ids, weights = signatures.checked_history_inputs(user_id, history_item_ids,
                                                                               history_weights)
        users = model.user_table.lookup(user_id)
        allowed = tf.cond(tf.size(allow_item_ids) > 0, lambda: mask(item_indices(allow_item_ids)),
                          lambda: tf.ones_like(model.catalog_item_ids, tf.bool))
        allowed = allowed & ~mask(item_indices(exclude_item_ids))
        content = signatures._user_content(model, users)

        def scores_of(history):  # signatures.build's history_scores for a history model
            scores = model.score_history(history, users, content, item_vectors=model.catalog_item_vectors)
            empty = (history_lib.lengths(history) == 0) & (tf.reduce_sum(tf.abs(content), axis=1) == 0)
            return tf.where(empty[:, None], tf.broadcast_to(model.catalog_popularity[None, :], tf.shape(scores)),
                            scores), empty

        return signatures.answer_from_history(model, users, history_item_ids, model.item_table.lookup(history_item_ids),
                                              weights, use_stored_history, k, allowed, scores_of)

    return recommend_by_history


def by_history_inputs(kind: str, num_items: int, length: int) -> Dict[str, np.ndarray]:
    """One request of `kind` (BY_HISTORY_REQUESTS): `length` catalogue items (spread over the catalogue, oldest
    first) for user 1 with their stored history, or for an anonymous session."""
    history = [f"i{j:07d}" for j in np.linspace(0, num_items - 1, length).astype(np.int64)]
    return {F.USER_ID: np.array([user_key(1) if kind == BY_HISTORY_REQUESTS[0] else ""], dtype=object),
            F.HISTORY_ITEMS_INPUT: np.array([history], dtype=object).reshape(1, length),
            F.HISTORY_WEIGHTS_INPUT: np.zeros((1, 0), np.float32),
            F.USE_STORED_HISTORY_INPUT: np.bool_(kind == BY_HISTORY_REQUESTS[0]),
            F.K_INPUT: np.int32(K), F.EXCLUDE_ITEMS_INPUT: np.array([], dtype=object),
            F.ALLOW_ITEMS_INPUT: np.array([], dtype=object)}


def adaptive_stats(call, budget_s: float, max_requests: int, min_requests: int = 20) -> Dict:
    """latency_stats with as many requests as fit in about `budget_s` (at least min_requests)."""
    for _ in range(3):
        call()
    started = time.perf_counter()
    call()
    one = max(time.perf_counter() - started, 1e-5)
    return common.latency_stats(call, max(min_requests, min(max_requests, int(budget_s / one))), warmup=7)


def _request(signature: str, inputs: Dict[str, np.ndarray]):
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = MODEL_NAME, signature
    for key, value in inputs.items():
        dtype = tf.string if isinstance(value, np.ndarray) and value.dtype == object else None
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value, dtype=dtype, shape=np.shape(value)))
    return request


def recommend_inputs() -> Dict[str, np.ndarray]:
    return {F.USER_ID: np.array([user_key(1)]), F.K_INPUT: np.int32(K), F.EXCLUDE_RATED_INPUT: np.bool_(True)}


def grpc_stats(base_path: str, budget_s: float, max_requests: int,
               requests: Optional[Dict[str, Tuple[str, Dict[str, np.ndarray]]]] = None) -> Dict:
    """Latency over gRPC of each named (signature, inputs) request (default: `recommend` alone) against one
    server on the version directory; {name: stats}, or recommend's stats when no requests are given."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from serving.server import build_server

    named = {F.RECOMMEND: (F.RECOMMEND, recommend_inputs())} if requests is None else requests
    protos = {name: _request(signature, inputs) for name, (signature, inputs) in named.items()}
    server, port, registry = build_server(MODEL_NAME, base_path, port=0, host="127.0.0.1")
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        returned = {}
        for name, request in protos.items():
            deadline = time.monotonic() + 120
            while True:  # the version loads in the background on some server versions
                try:
                    response = stub.Predict(request, timeout=60)
                    break
                except grpc.RpcError as e:
                    if e.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE) or \
                            time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            returned[name] = len(tf.make_ndarray(response.outputs[F.ITEMS_OUTPUT]).reshape(-1))
        # In turns, as in-process: the requests' ratio is measured under the same load.
        calls = {name: (lambda r=request: stub.Predict(r, timeout=60)) for name, request in protos.items()}
        out = round_robin_stats(calls, budget_s * len(protos), max_requests)
        for name in out:
            out[name]["items_returned"] = returned[name]
        return out if requests is not None else out[F.RECOMMEND]
    finally:
        channel.close()
        server.stop(0)
        stop = getattr(registry, "stop", None)
        if stop is not None:
            stop()


def round_robin_stats(calls: Dict[str, Callable[[], object]], budget_s: float, max_requests: int,
                      min_requests: int = 20, warmup: int = 7) -> Dict[str, Dict]:
    """common.latency_stats of several calls measured in turns (A, B, C, A, B, C, ...), as many rounds as fit in
    about `budget_s`: each call sees the same machine load, so their ratio holds on a shared, noisy machine."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    started = time.perf_counter()
    for call in calls.values():
        call()
    one = max(time.perf_counter() - started, 1e-5)
    rounds = max(min_requests, min(max_requests, int(budget_s / one)))
    latencies: Dict[str, List[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            t = time.perf_counter()
            call()
            latencies[name].append((time.perf_counter() - t) * 1000)
    out = {}
    for name, ms in latencies.items():
        ms.sort()
        out[name] = {"p50_ms": round(statistics.median(ms), 3), "p99_ms": round(ms[int(0.99 * (len(ms) - 1))], 3),
                     "throughput_rps": round(len(ms) / (sum(ms) / 1000), 1), "requests": len(ms)}
    return out


def measure(name: str, num_items: int, args) -> Dict:
    started = time.perf_counter()
    model, recommend, breakdown, by_history = build_recommender(name, num_items, args.users, args.rated_per_user)
    if not args.history_length:
        by_history = None
    base_path = os.path.join(args.work_dir, f"{name}_{num_items}")
    shutil.rmtree(base_path, ignore_errors=True)
    export = os.path.join(base_path, "1")
    functions = {F.RECOMMEND: recommend.get_concrete_function()}
    if by_history is not None:
        functions[F.RECOMMEND_BY_HISTORY] = by_history.get_concrete_function()
    tf.saved_model.save(model, export, signatures=functions)
    build_s = time.perf_counter() - started
    size_mb = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(export) for f in fs) / 2**20

    users = tf.constant([1], tf.int64)
    parts = {part: adaptive_stats(lambda fn=fn: fn(users), args.budget_s / 2, args.max_requests)["p50_ms"]
             for part, fn in breakdown.items()}
    del model, recommend, breakdown, by_history

    # recommend, and recommend_by_history's requests when the model has it, measured in turns (same load).
    requests = {F.RECOMMEND: (F.RECOMMEND, recommend_inputs())}
    if F.RECOMMEND_BY_HISTORY in functions:
        requests.update({kind: (F.RECOMMEND_BY_HISTORY, by_history_inputs(kind, num_items, args.history_length))
                         for kind in BY_HISTORY_REQUESTS})
    loaded = tf.saved_model.load(export)
    calls, returned = {}, {}
    for key, (signature, values) in requests.items():
        function = loaded.signatures[signature]
        inputs = {k: tf.constant(v, tf.string) if isinstance(v, np.ndarray) and v.dtype == object else tf.constant(v)
                  for k, v in values.items()}
        returned[key] = int(function(**inputs)[F.ITEMS_OUTPUT].shape[-1])
        calls[key] = lambda function=function, inputs=inputs: function(**inputs)
    stats = round_robin_stats(calls, args.budget_s * len(calls), args.max_requests)
    for key in stats:
        stats[key]["items_returned"] = returned[key]
    in_process = stats[F.RECOMMEND]
    del loaded, calls
    row = {"model": name, "items": num_items, "users": args.users, "k": K, "exclude_rated": True,
           "saved_model_mb": round(size_mb, 1), "build_and_save_s": round(build_s, 2),
           "in_process": in_process, "breakdown_p50_ms": parts}
    grpc = None
    if not args.no_grpc:
        grpc = grpc_stats(base_path, args.budget_s, args.max_requests, requests)
        row["grpc"] = grpc[F.RECOMMEND]
        row["grpc_p50_overhead_ms"] = round(row["grpc"]["p50_ms"] - in_process["p50_ms"], 3)
    if F.RECOMMEND_BY_HISTORY in functions:
        row["by_history"] = {"history_length": args.history_length, "requests": {}}
        for kind in BY_HISTORY_REQUESTS:
            entry = {"in_process": stats[kind],
                     "p50_ratio": round(stats[kind]["p50_ms"] / in_process["p50_ms"], 3)}
            if grpc is not None:
                entry["grpc"] = grpc[kind]
                entry["grpc_p50_ratio"] = round(grpc[kind]["p50_ms"] / grpc[F.RECOMMEND]["p50_ms"], 3)
            row["by_history"]["requests"][kind] = entry
        if num_items == TARGET_ITEMS:
            worst = max(e.get(key, 0.0) for e in row["by_history"]["requests"].values()
                        for key in ("p50_ratio", "grpc_p50_ratio"))
            row["by_history"].update({"target_p50_ratio": BY_HISTORY_TARGET_RATIO, "worst_p50_ratio": worst,
                                      "met": worst <= BY_HISTORY_TARGET_RATIO})
    if not args.keep:
        shutil.rmtree(base_path, ignore_errors=True)
    print(json.dumps(row), flush=True)
    return row


def add_growth(rows: List[Dict]) -> None:
    """Per model: ratios against its smallest catalogue, and the log-log slope between neighbours."""
    for name in {r["model"] for r in rows}:
        mine = sorted((r for r in rows if r["model"] == name), key=lambda r: r["items"])
        base = mine[0]
        for previous, row in zip([None] + mine[:-1], mine):
            row["reference"] = f"{name} at {base['items']} items, same run"
            row["items_ratio"] = round(row["items"] / base["items"], 3)
            row["p50_ratio"] = round(row["in_process"]["p50_ms"] / base["in_process"]["p50_ms"], 3)
            row["ns_per_item"] = round(row["in_process"]["p50_ms"] * 1e6 / row["items"], 2)
            if previous is not None:
                row["slope_vs_previous"] = round(
                    math.log(row["in_process"]["p50_ms"] / previous["in_process"]["p50_ms"])
                    / math.log(row["items"] / previous["items"]), 3)
            # The target is about the default model: auto is two_tower at 100K items (above EASE's limit).
            if row["items"] == TARGET_ITEMS and name == DEFAULT_AT_TARGET:
                row["target_p50_ms"] = TARGET_P50_MS
                row["met"] = row["in_process"]["p50_ms"] < TARGET_P50_MS and \
                    row.get("grpc", {}).get("p50_ms", 0.0) < TARGET_P50_MS


def _l3_bytes() -> Optional[int]:
    size = common.machine().get("l3_cache", "")
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    try:
        return int(size[:-1]) * units[size[-1]] if size and size[-1] in units else int(size)
    except ValueError:
        return None


def verdict(rows: List[Dict], name: str, embedding_dim: int) -> Optional[str]:
    """Is growth linear, and where it is not, what the breakdown says about why (numbers, not guesses)."""
    mine = sorted((r for r in rows if r["model"] == name), key=lambda r: r["items"])
    slopes = [r["slope_vs_previous"] for r in mine if "slope_vs_previous" in r]
    if not slopes:
        return None
    steps = ", ".join(f"{a['items']:,}->{b['items']:,}: {b['slope_vs_previous']}" for a, b in zip(mine, mine[1:]))
    last, previous = mine[-1], mine[-2]
    parts = last["breakdown_p50_ms"]
    tail = slopes[-1]
    growth = "about linear" if 0.8 <= tail <= 1.2 else "superlinear" if tail > 1.2 else "sublinear"
    text = f"{name}: log-log slopes {steps}; "
    if slopes[0] < 0.7:
        text += "sublinear while the catalogue is small (the per-call cost of the signature dominates), then "
    text += (f"{growth} at the large end ({previous['ns_per_item']} ns per item at {previous['items']:,}, "
             f"{last['ns_per_item']} at {last['items']:,}). At {last['items']:,} items, p50 of the parts: "
             f"score_all_items {parts['score_all_items']} ms, with top_k {parts['score_all_items+top_k']} ms, with "
             f"exclude_rated too {parts['score_all_items+exclude_rated+top_k']} ms (whole signature "
             f"{last['in_process']['p50_ms']} ms)"
             + ("; scoring the catalogue is most of it." if parts["score_all_items"] >= 0.7 * last["in_process"]["p50_ms"]
                else "."))
    if "matmul on the table, no gather" in parts:
        table = last["items"] * embedding_dim * 4
        l3 = _l3_bytes()
        matmul = parts["matmul on the table, no gather"]
        text += (f" The product alone, straight on the table without score_all_items' gathered copy, takes "
                 f"{matmul} ms, so the copy is {'not ' if matmul >= 0.8 * parts['score_all_items'] else ''}"
                 f"what costs.")
        if growth == "superlinear" and l3:
            small = previous["items"] * embedding_dim * 4
            text += (f" The item table is {table / 2**20:.0f} MB at {last['items']:,} items against "
                     f"{small / 2**20:.0f} MB at {previous['items']:,}, with a {l3 / 2**20:.0f} MB L3 cache: "
                     + ("the smaller table can stay cache-resident between requests, the larger one has to come "
                        "from memory on every request, which is consistent with each item costing more."
                        if small <= l3 < table else "both exceed the L3 cache."))
    return text


def training_rows(paths: List[str]) -> List[Dict]:
    """Trainer time per size from run_pipelines.py results: wall time, and per epoch from its TensorBoard log."""
    rows = []
    for path in paths:
        if not os.path.exists(path):
            continue
        with open(path) as f:
            for run in json.load(f).get("runs", []):
                trainer = run.get("components", {}).get("Trainer")
                if not trainer:
                    continue
                epochs = run.get("epochs_trained") or run.get("epochs_requested")
                steady = run.get("steady_epoch_s")
                eval_fraction = run.get("eval_fraction", 0.1)
                row = {"interactions": run["interactions"], "users": run.get("users"), "items": run.get("items"),
                       "eval_fraction": eval_fraction,
                       "train_examples": round(run["interactions"] * (1 - eval_fraction)),
                       "trainer_wall_s": trainer["wall_s"], "epochs": epochs, "steady_epoch_s": steady,
                       "source": os.path.basename(path)}
                if steady and epochs:  # what the epochs do not explain: catalogue, first-epoch tracing, export
                    row["outside_steady_epochs_s"] = round(trainer["wall_s"] - steady * epochs, 1)
                rows.append(row)
    rows.sort(key=lambda r: r["interactions"])
    if rows:
        base = rows[0]
        for row in rows:
            row["reference"] = f"{base['interactions']:,} interactions, same make bench run"
            row["interactions_ratio"] = round(row["interactions"] / base["interactions"], 3)
            row["train_examples_ratio"] = round(row["train_examples"] / base["train_examples"], 3)
            row["wall_ratio"] = round(row["trainer_wall_s"] / base["trainer_wall_s"], 3)
            if row["steady_epoch_s"] and base["steady_epoch_s"]:
                row["per_epoch_ratio"] = round(row["steady_epoch_s"] / base["steady_epoch_s"], 3)
    return rows


def step_time_vs_vocabulary(sizes: List[Dict], steps: int = 60, batch_size: int = 1024) -> List[Dict]:
    """mf train-step time at each run's vocabulary sizes, with the configured L2 and without: the per-step
    part of the Trainer's growth that does not come from the number of interactions."""
    rng = np.random.default_rng(0)
    out = []
    for size in sizes:
        users, items = size["users"] + F.OOV_BUCKETS, size["items"] + F.OOV_BUCKETS
        n = steps * batch_size
        data = tf.data.Dataset.from_tensor_slices((
            {F.USER_INDEX: rng.integers(0, users, n), F.ITEM_INDEX: rng.integers(0, items, n)},
            rng.normal(3.5, 1.0, n).astype(np.float32))).batch(batch_size).cache()
        for _ in data:  # fill the cache before timing
            pass
        row = {"users": users, "items": items, "batch_size": batch_size}
        for l2 in (TrainingConfig.l2, 0.0):
            model = models.get("mf").build(ModelDims(users, items, 1, 3.5), TrainingConfig(l2=l2))
            model.compile(optimizer=tf.keras.optimizers.Adam(TrainingConfig.learning_rate), loss="mse")
            model.fit(data.take(5), verbose=0)
            started = time.perf_counter()
            model.fit(data, verbose=0)
            row[f"ms_per_step_l2_{l2:g}"] = round((time.perf_counter() - started) * 1000 / steps, 2)
        out.append(row)
        print(json.dumps(row), flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--models", nargs="+", default=["mf", DEFAULT_AT_TARGET, "hybrid"])
    parser.add_argument("--hybrid-max-items", type=int, default=100_000,
                        help="larger catalogues skip the non-mf models (they score every pair through an MLP)")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--rated-per-user", type=int, default=50)
    parser.add_argument("--history-length", type=int, default=20,
                        help="items in the recommend_by_history requests of history models (0: skip them)")
    parser.add_argument("--budget-s", type=float, default=2.0, help="about this long per latency measurement")
    parser.add_argument("--max-requests", type=int, default=300)
    parser.add_argument("--no-grpc", action="store_true")
    parser.add_argument("--no-step-probe", action="store_true",
                        help="skip timing the mf train step at each pipeline run's vocabulary sizes")
    parser.add_argument("--keep", action="store_true", help="keep the SavedModels under --work-dir")
    parser.add_argument("--work-dir", default=os.path.join("output", "bench", "scaling"))
    parser.add_argument("--pipeline-results", nargs="*", default=[
        os.path.join("bench", "results", "pipeline_scale_100k.json"),
        os.path.join("bench", "results", "pipeline_scale_1m.json")])
    parser.add_argument("--out", default=os.path.join("bench", "results", "recommend_scaling.json"))
    args = parser.parse_args(argv)

    rows = []
    for name in args.models:
        for n in sorted(args.items):
            if name not in ("mf", DEFAULT_AT_TARGET) and n > args.hybrid_max_items:
                print(f"skip {name} at {n} items (--hybrid-max-items {args.hybrid_max_items})", flush=True)
                continue
            rows.append(measure(name, n, args))
    add_growth(rows)
    result = {
        "benchmark": "recommend_scaling", "machine": common.machine(), "k": K, "users": args.users,
        "rated_per_user": args.rated_per_user, "target": {"items": TARGET_ITEMS, "p50_ms": TARGET_P50_MS},
        "by_history_target": {"items": TARGET_ITEMS, "p50_ratio": BY_HISTORY_TARGET_RATIO,
                              "history_length": args.history_length},
        "rows": rows,
        "growth": [v for v in (verdict(rows, name, TrainingConfig.embedding_dim) for name in args.models) if v],
        "training": training_rows(args.pipeline_results),
    }
    if result["training"] and not args.no_step_probe:
        result["training_step_vs_vocabulary"] = step_time_vs_vocabulary(
            [t for t in result["training"] if t.get("users") and t.get("items")])
    common.write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
