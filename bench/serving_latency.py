"""gRPC serving latency against an in-process call of the same signature (a benchmark, not a test).

Usage: .venv/bin/python bench/serving_latency.py [--model-dir output/serving/recsys] [--requests 400]
       [--batching-requests 1600] [--out bench/results/serving_latency.json]
       [--connections-held 1000] [--connections-out bench/results/serving_connections.json]
       [--only connections]

Starts `recsys serve`'s server on loopback over the newest pushed version, then for `predict` (one
user-item pair) and `recommend` (top-10, rated items excluded) measures p50/p99 latency and throughput
at concurrency 1 and 16 through TF Serving's official stubs, and the same signature called in-process.
The ratio to the in-process call is the server's overhead, measured in the same run.

Batching rows: `recsys serve` runs as its own process (as in production), once with server-side
batching off and once on (max batch 32, 2 ms timeout, 2 batch threads), and 32 client threads in this
process measure each signature's throughput; the ratio on/off is the batching gain. The same is
measured on an mf `recommend` over a 100K-item catalogue (bench/recommend_scaling.py's model), where
a batch turns 32 matrix-vector products over the item table into one matrix product.

Connection rows (their own file; `--only connections` runs just them): a new client's latency (connect,
one `predict`, answer read) with 1,000 idle REST connections held open (half silent, half a partial
header), beside the same new client with none held; and the same with 1,000 connected gRPC channels.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Dict, List, Optional

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

from bench import common  # noqa: E402
from components import features as F  # noqa: E402
from serving.client import RecsysClient  # noqa: E402
from serving.connections import raise_open_file_limit  # noqa: E402
from serving.model_store import list_versions  # noqa: E402
from serving.server import build_server  # noqa: E402


def _requests(name: str) -> Dict[str, predict_pb2.PredictRequest]:
    def request(signature, **inputs):
        r = predict_pb2.PredictRequest()
        r.model_spec.name, r.model_spec.signature_name = name, signature
        for key, value in inputs.items():
            r.inputs[key].CopyFrom(tf.make_tensor_proto(value))
        return r

    return {
        F.PREDICT: request(F.PREDICT, **{F.USER_ID: ["u00001"], F.ITEM_ID: ["i00001"]}),
        F.RECOMMEND: request(F.RECOMMEND, **{F.USER_ID: ["u00001"], F.K_INPUT: np.int32(10),
                                             F.EXCLUDE_RATED_INPUT: True}),
    }


def _measure(call: Callable[[], object], requests: int, concurrency: int) -> Dict[str, float]:
    for _ in range(20):  # warm-up: traced functions, connections
        call()
    latencies: List[float] = []
    lock = threading.Lock()
    per_worker = max(1, requests // concurrency)

    def worker():
        mine = []
        for _ in range(per_worker):
            start = time.perf_counter()
            call()
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ms = sorted(x * 1000 for x in latencies)
    return {"p50_ms": round(statistics.median(ms), 3), "p99_ms": round(ms[int(0.99 * (len(ms) - 1))], 3),
            "throughput_rps": round(len(ms) / wall, 1), "requests": len(ms)}


BATCHING_CONCURRENCY = 32
BATCHING_CONFIG = "max_batch_size { value: 32 }\nbatch_timeout_micros { value: 2000 }\n" \
                  "num_batch_threads { value: 2 }\nmax_enqueued_batches { value: 100 }\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_process(model_dir: str, batching_file: str = "", rest_port: int = 0) -> tuple:
    """`recsys serve` in a child process on a free port (REST on `rest_port`, 0: off); returns (process, target)
    once a model answers."""
    port = _free_port()
    command = [sys.executable, "-m", "pipeline.cli", "serve", "--model-dir", model_dir, "--host", "127.0.0.1",
               "--port", str(port), "--rest-port", str(rest_port)]
    if batching_file:
        command += ["--batching-parameters-file", batching_file]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    process = subprocess.Popen(command, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with RecsysClient(f"127.0.0.1:{port}", timeout=10) as client:
        client.wait_until_ready(120)
    return process, f"127.0.0.1:{port}"


def _catalogue_model(work_dir: str, num_items: int) -> tuple:
    """An mf `recommend` over `num_items` items, saved as version 1 (bench/recommend_scaling.py's builder)."""
    from bench import recommend_scaling

    model, recommend, _, _ = recommend_scaling.build_recommender("mf", num_items, num_users=1000, rated_per_user=20)
    base = os.path.join(work_dir, f"recommend_{num_items}")
    tf.saved_model.save(model, os.path.join(base, "1"), signatures={F.RECOMMEND: recommend.get_concrete_function()})
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = F.DEFAULT_MODEL_NAME, F.RECOMMEND
    for key, value in {F.USER_ID: [recommend_scaling.user_key(1)], F.K_INPUT: np.int32(10),
                       F.EXCLUDE_RATED_INPUT: True}.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return base, {f"{F.RECOMMEND} ({num_items:,} items)": request}


def _batching_rows(model_dir: str, requests: int, out_dir: str,
                   named_requests: Optional[Dict[str, predict_pb2.PredictRequest]] = None) -> List[Dict[str, object]]:
    named_requests = named_requests or _requests(F.DEFAULT_MODEL_NAME)
    batching_file = os.path.join(out_dir, "bench_batching.config")
    with open(batching_file, "w") as f:
        f.write(BATCHING_CONFIG)
    throughput: Dict[str, Dict[str, dict]] = {}
    try:
        for mode, config in (("off", ""), ("on", batching_file)):
            process, target = _serve_process(model_dir, config)
            try:
                channel = grpc.insecure_channel(target)
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                for signature, request in named_requests.items():
                    stats = _measure(lambda: stub.Predict(request, timeout=30), requests, BATCHING_CONCURRENCY)
                    throughput.setdefault(signature, {})[mode] = stats
                    print(json.dumps({"batching": mode, "signature": signature, **stats}), flush=True)
                channel.close()
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(60)
    finally:
        os.remove(batching_file)
    return [{"signature": signature, "concurrency": BATCHING_CONCURRENCY, "off": modes["off"], "on": modes["on"],
             "off_rps": modes["off"]["throughput_rps"], "on_rps": modes["on"]["throughput_rps"],
             "ratio": round(modes["on"]["throughput_rps"] / modes["off"]["throughput_rps"], 3)}
            for signature, modes in throughput.items()]


NEW_CLIENT_SAMPLES = 60


def _latency(seconds: List[float]) -> Dict[str, float]:
    ms = sorted(x * 1000 for x in seconds)
    return {"p50_ms": round(statistics.median(ms), 3), "p99_ms": round(ms[int(0.99 * (len(ms) - 1))], 3),
            "max_ms": round(ms[-1], 3), "first_ms": round(seconds[0] * 1000, 3), "samples": len(ms)}


def _rest_new_client(port: int, body: bytes) -> float:
    """Seconds for a new REST client: connect, POST one `predict`, read the whole answer."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", f"/v1/models/{F.DEFAULT_MODEL_NAME}:predict", body=body,
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise RuntimeError(f"REST predict answered {response.status}")
    return time.perf_counter() - started


def _grpc_new_client(target: str, request: predict_pb2.PredictRequest) -> float:
    """Seconds for a new gRPC client: a channel of its own (its own connection), one Predict."""
    started = time.perf_counter()
    with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=10)
    return time.perf_counter() - started


def _idle_rest_connections(port: int, count: int) -> List[socket.socket]:
    partial = f"GET /v1/models/{F.DEFAULT_MODEL_NAME} HTTP/1.1\r\nHost".encode()
    held = []
    for i in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if i % 2:
            sock.sendall(partial)
        held.append(sock)
    return held


def _sockets(pid: int) -> int:
    """Sockets a process holds (its connections among them), from /proc."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return count


def _open_channels(target: str, count: int) -> List[grpc.Channel]:
    channels = [grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(count)]
    for channel in channels:
        grpc.channel_ready_future(channel).result(timeout=60)
    return channels


def _connection_rows(model_dir: str, held: int, samples: int = NEW_CLIENT_SAMPLES) -> List[Dict[str, object]]:
    """A new client's latency with `held` idle REST connections / connected gRPC channels, beside none held."""
    raise_open_file_limit()  # this process holds `held` sockets at once
    rest_port = _free_port()
    process, target = _serve_process(model_dir, rest_port=rest_port)
    body = json.dumps({"signature_name": F.PREDICT, "instances": [{F.USER_ID: "u00001", F.ITEM_ID: "i00001"}]})
    request = _requests(F.DEFAULT_MODEL_NAME)[F.PREDICT]
    cases = (("REST", "idle connections", lambda: _rest_new_client(rest_port, body.encode()),
              lambda: _idle_rest_connections(rest_port, held)),
             ("gRPC", "connected channels", lambda: _grpc_new_client(target, request),
              lambda: _open_channels(target, held)))
    rows = []
    try:
        for api, what, new_client, hold in cases:
            for _ in range(5):  # warm-up: traced functions, the first connection
                new_client()
            reference = _latency([new_client() for _ in range(samples)])
            sockets = _sockets(process.pid)
            opened = hold()
            try:
                loaded = _latency([new_client() for _ in range(samples)])
                held_by_server = _sockets(process.pid) - sockets  # still held after the samples
            finally:
                for o in opened:
                    o.close()
            time.sleep(0.5)  # the server lets the closed ones go before the next case
            row = {"api": api, "held": held, "what": what, "held_by_server": held_by_server, "none_held": reference,
                   "with_held": loaded, "p50_ratio": round(loaded["p50_ms"] / reference["p50_ms"], 3)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=os.path.join("output", "serving", F.DEFAULT_MODEL_NAME))
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--batching-requests", type=int, default=1600,
                        help="requests per batching on/off measurement (0 skips the batching rows)")
    parser.add_argument("--catalogue-items", type=int, default=100_000,
                        help="also measure batching on an mf recommend over this many items (0: skip)")
    parser.add_argument("--out", default=os.path.join("bench", "results", "serving_latency.json"))
    parser.add_argument("--connections-held", type=int, default=1000,
                        help="idle REST connections / open gRPC channels held while a new client is timed (0: skip)")
    parser.add_argument("--connections-out", default=os.path.join("bench", "results", "serving_connections.json"))
    parser.add_argument("--only", choices=["connections"], help="run this section alone")
    args = parser.parse_args()
    versions = list_versions(args.model_dir)
    if not versions:
        print(f"no model version under {args.model_dir}: run `make run` first", file=sys.stderr)
        return 1
    if args.connections_held:
        rows = _connection_rows(args.model_dir, args.connections_held)
        command = " ".join(["bench/serving_latency.py", *sys.argv[1:]])
        common.write_json(args.connections_out, {"machine": common.machine(), "version": versions[-1],
                                                 "command": command, "rows": rows})
        print(f"wrote {args.connections_out}")
    if args.only == "connections":
        return 0
    model = tf.saved_model.load(f"{args.model_dir}/{versions[-1]}")
    server, port, _ = build_server(F.DEFAULT_MODEL_NAME, args.model_dir, port=0, host="127.0.0.1")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    results = {"cpus": os.cpu_count(), "version": versions[-1], "rows": []}
    try:
        for signature, request in _requests(F.DEFAULT_MODEL_NAME).items():
            direct_inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
            function = model.signatures[signature]
            for concurrency in (1, 16):
                grpc_stats = _measure(lambda: stub.Predict(request, timeout=30), args.requests, concurrency)
                direct = _measure(lambda: function(**direct_inputs), args.requests, concurrency)
                row = {"signature": signature, "concurrency": concurrency, "grpc": grpc_stats, "in_process": direct,
                       "p50_overhead_ms": round(grpc_stats["p50_ms"] - direct["p50_ms"], 3),
                       "throughput_ratio": round(grpc_stats["throughput_rps"] / direct["throughput_rps"], 3)}
                results["rows"].append(row)
                print(json.dumps(row), flush=True)
    finally:
        server.stop(0)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    if args.batching_requests:
        out_dir = os.path.dirname(args.out) or "."
        results["batching"] = _batching_rows(args.model_dir, args.batching_requests, out_dir)
        if args.catalogue_items:  # where batching pays: one product over a large catalogue for many users
            with tempfile.TemporaryDirectory() as work:
                base, named = _catalogue_model(work, args.catalogue_items)
                results["batching"] += _batching_rows(base, args.batching_requests // 2, out_dir, named)
    common.write_json(args.out, results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
