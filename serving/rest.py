"""TF Serving's REST API over the same inference core as gRPC, so both answer alike.

  GET  /v1/models/{name}[/versions/{v}|/labels/{l}]             model status
  GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata    signature defs
  POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict     {"instances": [...]} or {"inputs": ...}
  POST /v1/models/{name}[/versions/{v}|/labels/{l}]:regress     {"examples": [...], "context": {...}}
  POST /v1/models/{name}[/versions/{v}|/labels/{l}]:classify
  GET  /monitoring/prometheus/metrics                           (the path from the monitoring config)

Errors are {"error": "..."} with TF Serving's mapping of status codes to HTTP codes. Binary
strings travel as {"b64": "..."}; string outputs whose name ends in "_bytes" are sent that way.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import socket
import ssl
import tempfile
import threading
import time
from concurrent import futures
from http import HTTPStatus
from typing import Any, Dict, Optional, Tuple

import grpc
import numpy as np
import tensorflow as tf
import tornado.web
from google.protobuf import json_format
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    input_pb2,
    predict_pb2,
    regression_pb2,
)

from components import features as F
from serving.budget import MemoryBudget, OverBudget
from serving.connections import DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_PER_CLIENT, SheddingHTTPServer
from serving.inference import SIGNATURE_DEF_FIELD, Inference, RequestError, answer, signature_function
from serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from serving.metrics import RequestMetrics

log = logging.getLogger(__name__)

_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
                   r"(?:/(?P<metadata>metadata)|:(?P<verb>predict|regress|classify))?/?$")

# TF Serving's http_server.cc ToHTTPStatusCode.
_HTTP = {
    grpc.StatusCode.OK: HTTPStatus.OK, grpc.StatusCode.CANCELLED: 499, grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.DEADLINE_EXCEEDED: 504, grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409, grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429, grpc.StatusCode.FAILED_PRECONDITION: 412, grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400, grpc.StatusCode.UNIMPLEMENTED: 501, grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.DATA_LOSS: 500, grpc.StatusCode.UNAUTHENTICATED: 401,
}


def _bad(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


# --- JSON -> tensors and examples --------------------------------------------------------------------

def _decode_strings(value: Any, name: str) -> Any:
    if isinstance(value, list):
        return [_decode_strings(v, name) for v in value]
    if isinstance(value, dict) and set(value) == {"b64"}:
        try:
            return base64.b64decode(value["b64"], validate=True)
        except ValueError:
            raise _bad(f"input {name}: invalid base64 in b64 value") from None
    if isinstance(value, str):
        return value.encode()
    raise _bad(f"input {name}: expected strings, got {type(value).__name__} {json.dumps(value)[:40]}")


def _tensor(value: Any, name: str, spec: Optional[tf.TensorSpec]):
    """A TensorProto of the signature's dtype; an input the signature lacks keeps JSON's own type."""
    dtype = spec.dtype if spec is not None else None
    try:
        if dtype == tf.string or (dtype is None and _has_strings(value)):
            array = np.array(_decode_strings(value, name), dtype=object)
            if array.size and any(isinstance(v, list) for v in array.ravel()):
                raise _bad(f"input {name}: lists of different lengths are not a tensor (every row needs the same "
                           f"length: pad shorter rows, e.g. a history with \"\")")
            return tf.make_tensor_proto(array, dtype=tf.string, shape=array.shape)
        array = np.asarray(value, dtype=dtype.as_numpy_dtype if dtype is not None else None)
        if array.dtype == object:
            raise ValueError("ragged or mixed values")
        return tf.make_tensor_proto(array, dtype=dtype)
    except RequestError:
        raise
    except (TypeError, ValueError) as e:
        expected = dtype.name if dtype is not None else "a tensor"
        raise _bad(f"input {name}: cannot convert {json.dumps(value)[:60]} to {expected}: {e}") from None


def _has_strings(value: Any) -> bool:
    while isinstance(value, list) and value:
        value = value[0]
    return isinstance(value, (str, dict))


def _predict_inputs(body: Dict[str, Any], specs: Dict[str, tf.TensorSpec]) -> Tuple[Dict[str, Any], bool]:
    """The request's inputs by name and whether it used the row ("instances") format."""
    if ("instances" in body) == ("inputs" in body):
        raise _bad('JSON request must have exactly one of "instances" (row format) or "inputs" (columnar format)')
    only = next(iter(specs)) if len(specs) == 1 else None
    if "inputs" in body:
        inputs = body["inputs"]
        if isinstance(inputs, dict) and not (only and set(inputs) == {"b64"}):
            return inputs, False
        if only is None:
            raise _bad(f'"inputs" must name the signature\'s inputs: {", ".join(sorted(specs))}')
        return {only: inputs}, False
    instances = body["instances"]
    if not isinstance(instances, list) or not instances:
        raise _bad('"instances" must be a non-empty list')
    if all(isinstance(row, dict) and set(row) != {"b64"} for row in instances):
        names = set(instances[0])
        if any(set(row) != names for row in instances):
            raise _bad("every instance must have the same named inputs")
        return {name: [row[name] for row in instances] for name in names}, True
    if only is None:
        raise _bad(f'instances must be objects naming the signature\'s inputs: {", ".join(sorted(specs))}')
    return {only: instances}, True


def _feature(value: Any, name: str) -> tf.train.Feature:
    values = value if isinstance(value, list) else [value]
    if all(isinstance(v, bool) or isinstance(v, int) for v in values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=_decode_strings(values, name)))


def _example(features: Any) -> tf.train.Example:
    if not isinstance(features, dict):
        raise _bad("each example must be an object of feature name to value(s)")
    return tf.train.Example(features=tf.train.Features(
        feature={name: _feature(value, name) for name, value in features.items()}))


def _examples_input(body: Dict[str, Any]) -> input_pb2.Input:
    examples = body.get("examples")
    if not isinstance(examples, list) or not examples:
        raise _bad('JSON request must have a non-empty "examples" list')
    model_input = input_pb2.Input()
    if "context" in body:
        target = model_input.example_list_with_context
        target.context.CopyFrom(_example(body["context"]))
    else:
        target = model_input.example_list
    for features in examples:
        target.examples.add().CopyFrom(_example(features))
    return model_input


# --- tensors -> JSON ---------------------------------------------------------------------------------

def _json_value(array: np.ndarray, name: str) -> Any:
    if array.dtype == object or array.dtype.kind == "S":
        binary = name.endswith("_bytes")

        def encode(v: bytes):
            if not binary:
                try:
                    return v.decode()
                except UnicodeDecodeError:
                    pass
            return {"b64": base64.b64encode(v).decode()}

        return np.vectorize(encode, otypes=[object])(array).tolist() if array.size else array.tolist()
    if array.dtype == np.float32:  # shortest repr of the float32, as TF Serving prints it (3.1, not 3.0999999)
        return np.vectorize(lambda v: float(repr(v)), otypes=[object])(array).tolist() if array.size else []
    return array.tolist()


def _predictions(response: predict_pb2.PredictResponse, row_format: bool) -> Dict[str, Any]:
    arrays = {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}
    if not row_format:
        values = {name: _json_value(a, name) for name, a in arrays.items()}
        return {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    sizes = {name: a.shape[0] if a.ndim else None for name, a in arrays.items()}
    batch = next(iter(sizes.values()))
    for name, size in sizes.items():
        if size is None or size != batch:
            raise _bad(f"Tensor name: {name} has inconsistent batch size: {size} expecting: {batch}")
    rows = {name: _json_value(a, name) for name, a in arrays.items()}
    if len(rows) == 1:
        return {"predictions": next(iter(rows.values()))}
    return {"predictions": [{name: rows[name][i] for name in rows} for i in range(batch)]}


# --- the HTTP server ---------------------------------------------------------------------------------

class RestServer:
    """TF Serving's REST API on Tornado's HTTP/1.1 server, with limits a client cannot talk it out of.

    Tornado parses the requests on one event-loop thread: a Content-Length that is negative, not a
    number or over the body limit, and transfer encodings other than chunked, get 400 before any body
    is read; a POST with neither Content-Length nor chunked encoding gets 411, and one whose length does
    not fit the memory budget shared with gRPC (serving/budget.py) 429, unread. Headers must arrive,
    body reads progress and idle keep-alive connections end within `timeout` seconds. At most
    `max_connections` connections are open, `max_per_client` from one address; at a cap the
    longest-idle connection is closed to admit the new one (serving/connections.py), so idle sockets
    cannot lock clients out. Inference runs on `workers` threads with at most 8 requests per worker
    waiting (more get 503), so thread count and memory stay bounded whatever clients do. Under TLS the
    port speaks only TLS, with the same SSLConfig as gRPC, client certificates required when it says
    client_verify.
    """

    def __init__(self, inference: Inference, host: str, port: int, metrics: Optional[RequestMetrics],
                 metrics_path: Optional[str], max_body_bytes: int, tls=None, workers: int = 8,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS, max_per_client: int = DEFAULT_MAX_PER_CLIENT,
                 timeout: float = 10.0, budget: Optional[MemoryBudget] = None):
        self.inference, self.metrics, self.metrics_path = inference, metrics, metrics_path
        self.budget = budget or MemoryBudget(192 << 20)
        self.max_body_bytes, self.timeout = max_body_bytes, timeout
        self.max_connections, self.max_per_client = max_connections, max_per_client
        self.max_pending = workers * 8
        self.pending = 0  # requests waiting for or running on a worker (touched on the loop thread only)
        self._ssl = _ssl_context(tls) if tls else None
        self._socket = _listen(host, port)
        self.port = self._socket.getsockname()[1]
        self._pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rest")
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._httpd = None
        self._thread = threading.Thread(target=self._run, name="rest", daemon=True)
        self._ready = threading.Event()

    def start(self) -> "RestServer":
        self._thread.start()
        self._ready.wait(30)
        return self

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        app = tornado.web.Application([(r".*", _Handler, {"rest": self})], log_function=lambda handler: None,
                                      compress_response=False)
        # idle_connection_timeout is Tornado's header timeout: a connection that has not sent a whole request's
        # headers within it (nothing, a partial header, or nothing since its last answer) is closed.
        self._httpd = SheddingHTTPServer(app, ssl_options=self._ssl, max_body_size=self.max_body_bytes,
                                         max_header_size=64 * 1024, idle_connection_timeout=self.timeout,
                                         body_timeout=self.timeout, decompress_request=False)
        self._httpd.max_connections, self._httpd.max_per_client = self.max_connections, self.max_per_client
        self._httpd.add_sockets([self._socket])
        self._ready.set()
        self._loop.run_forever()

    def stop(self, grace: Optional[float] = None) -> None:
        """Stops accepting, lets requests in flight finish (up to `grace` s), then closes every connection."""
        if self._loop is None:
            self._socket.close()
            self._pool.shutdown(wait=False)
            return

        async def shutdown():
            self._httpd.stop()
            deadline = time.monotonic() + (grace or 0)
            while self.pending and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            try:
                await asyncio.wait_for(self._httpd.close_all_connections(), timeout=2)
            except asyncio.TimeoutError:
                pass

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=(grace or 0) + 5)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            if not self._thread.is_alive():
                self._loop.close()
            self._pool.shutdown(wait=True)

    def handle(self, method: str, path: str, body: bytes) -> Tuple[int, bytes, str]:
        if method == "GET" and self.metrics_path and path == self.metrics_path and self.metrics is not None:
            return 200, self.metrics.render(), METRICS_CONTENT_TYPE
        match = _PATH.match(path)
        if not match or (method == "GET") == bool(match["verb"]):
            return _error(RequestError(grpc.StatusCode.NOT_FOUND, f"Malformed request: {method} {path[:200]}"))
        spec = _model_spec(match)
        api = match["verb"] or ("metadata" if match["metadata"] else "status")
        response, error = answer(api, spec, lambda: self._dispatch(api, spec, body), self.metrics)
        if error is not None:
            return _error(error)
        return 200, json.dumps(response).encode(), "application/json"

    def _dispatch(self, api: str, spec, body: bytes) -> Dict[str, Any]:
        if api == "status":
            request = get_model_status_pb2.GetModelStatusRequest(model_spec=spec)
            return _to_dict(self.inference.status(request))
        if api == "metadata":
            request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=spec,
                                                                     metadata_field=[SIGNATURE_DEF_FIELD])
            return _to_dict(self.inference.metadata(request))
        if len(body) > self.max_body_bytes:
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"request body of {len(body)} bytes exceeds the limit of {self.max_body_bytes}")
        try:
            parsed = json.loads(body or b"null")
        except ValueError as e:
            raise _bad(f"JSON Parse error: {e}") from None
        if not isinstance(parsed, dict):
            raise _bad("JSON request must be an object")
        spec.signature_name = parsed.get("signature_name", "")
        if api == "predict":
            return self._predict(spec, parsed)
        model_input = _examples_input(parsed)
        if api == "regress":
            request = regression_pb2.RegressionRequest(model_spec=spec, input=model_input)
            response = _answered(spec, self.inference.regress(request))
            return {"results": [r.value for r in response.result.regressions]}
        request = classification_pb2.ClassificationRequest(model_spec=spec, input=model_input)
        response = _answered(spec, self.inference.classify(request))
        return {"results": [[[c.label, c.score] for c in classification.classes]
                            for classification in response.result.classifications]}

    def _predict(self, spec, body: Dict[str, Any]) -> Dict[str, Any]:
        loaded = self.inference.models.resolve(spec)
        function = signature_function(loaded, spec.signature_name or F.SERVING_DEFAULT)
        _, specs = function.structured_input_signature
        inputs, row_format = _predict_inputs(body, specs)
        if row_format:  # as TF Serving: each instance's value gains a leading dimension, which a scalar cannot take
            scalars = sorted(name for name in inputs if name in specs and specs[name].shape.rank == 0)
            if scalars:
                raise _bad(f"input {', '.join(scalars)}: scalar in signature "
                           f"\"{spec.signature_name or F.SERVING_DEFAULT}\", which the row format (\"instances\") "
                           f"would turn into one value per instance: send the columnar format (\"inputs\")")
        request = predict_pb2.PredictRequest(model_spec=spec)
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(_tensor(value, name, specs.get(name)))
        return _predictions(_answered(spec, self.inference.predict_on(loaded, request)), row_format)


def _answered(spec, response):
    """Notes on the request's spec which version and signature answered (for the metrics labels)."""
    spec.version.value = response.model_spec.version.value
    spec.signature_name = response.model_spec.signature_name
    return response


def _model_spec(match):
    spec = predict_pb2.PredictRequest().model_spec
    spec.name = match["name"]
    if match["version"]:
        spec.version.value = int(match["version"])
    if match["label"]:
        spec.version_label = match["label"]
    return spec


def _to_dict(message) -> Dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True, including_default_value_fields=True)


def _error(error: RequestError) -> Tuple[int, bytes, str]:
    return int(_HTTP.get(error.code, 500)), json.dumps({"error": str(error)}).encode(), "application/json"


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket; "::" also takes IPv4 (dual stack), as TF Serving's and gRPC's do."""
    host = host.strip("[]") or "::"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(1024)  # a burst of new clients waits in the kernel's queue, not refused
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _ssl_context(tls) -> ssl.SSLContext:
    """The SSLConfig's PEM contents as a server context; client certificates required on client_verify."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as directory:  # ssl loads a key pair from files only
        cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
        with open(os.open(key, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
            f.write(tls.server_key)
        with open(cert, "wb") as f:
            f.write(tls.server_cert)
        context.load_cert_chain(cert, key)
    if tls.custom_ca:
        context.load_verify_locations(cadata=tls.custom_ca.decode())
    context.verify_mode = ssl.CERT_REQUIRED if tls.client_verify else ssl.CERT_NONE
    return context


@tornado.web.stream_request_body
class _Handler(tornado.web.RequestHandler):
    """Reserves a POST's memory (serving/budget.py) from its Content-Length before reading its body."""

    SUPPORTED_METHODS = ("GET", "POST")

    def initialize(self, rest: RestServer):
        self.rest, self._chunks, self._reservation = rest, [], None

    def prepare(self):
        if self.request.method != "POST":
            return
        headers = self.request.headers
        length, encoding = headers.get("Content-Length"), headers.get("Transfer-Encoding")
        if length is None and encoding is None:
            self._reply(411, json.dumps({"error": "POST needs a Content-Length header"}).encode(), "application/json")
            return
        # Checked here too: with a streamed body this runs before Tornado reads (and validates) the body.
        if encoding is not None and encoding.strip().lower() != "chunked":
            self._reply(*_error(_bad(f"unsupported Transfer-Encoding: {encoding[:40]}")))
            return
        if length is not None and not (length.isdigit() and int(length) <= self.rest.max_body_bytes):
            self._reply(*_error(_bad(f"Content-Length must be an integer from 0 to {self.rest.max_body_bytes}, "
                                     f"got {length[:40]!r}")))
            return
        wire = int(length) if length is not None else self.rest.max_body_bytes  # chunked: up to the limit
        self._reservation = self.rest.budget.reserve(wire)
        if self._reservation is None:
            over = OverBudget(wire, self.rest.budget.limit)
            log.warning("%s: RESOURCE_EXHAUSTED: %s", self.request.path[:200], over)
            self._reply(*_error(RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(over))))

    def data_received(self, chunk: bytes):
        if self._reservation is not None and not self._finished:
            self._chunks.append(chunk)

    async def get(self):
        await self._serve("GET", b"")

    async def post(self):
        body, self._chunks = b"".join(self._chunks), []
        await self._serve("POST", body)

    async def _serve(self, method: str, body: bytes):
        rest = self.rest
        if rest.pending >= rest.max_pending:
            self._reply(*_error(RequestError(grpc.StatusCode.UNAVAILABLE,
                                             f"server busy: {rest.pending} REST requests pending")))
            return
        rest.pending += 1
        try:
            reply = await asyncio.get_running_loop().run_in_executor(
                rest._pool, rest.handle, method, self.request.path, body)
        finally:
            rest.pending -= 1
        self._reply(*reply)

    def _reply(self, status: int, body: bytes, content_type: str):
        self.set_status(status, reason=None if status in HTTPStatus._value2member_map_ else "Error")
        self.set_header("Content-Type", content_type)
        # Released before the answer is written (the parsed request is gone by now): released in on_finish, after
        # the write, a client that read its answer could still find the budget taken by it.
        self._release()
        self.finish(body)

    def on_finish(self):
        self._release()

    def on_connection_close(self):
        self._release()

    def _release(self):
        self._chunks = []
        if self._reservation is not None:
            self._reservation.release()
