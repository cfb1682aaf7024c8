"""How a server runs (ports, threads, limits, batching, TLS, metrics), and TF Serving's files for it.

`recsys serve` takes the same --batching_parameters_file, --ssl_config_file and
--monitoring_config_file as `tensorflow_model_server` (the files in serving/deploy/ work with both).
Their protos are not shipped in the tensorflow-serving-api wheel, so the fields we honour are
declared here under TF Serving's message and field names, and the files parse as protobuf text the
same way TF Serving parses them.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2

from components import features as F
from serving.connections import DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_PER_CLIENT
from serving.limits import DEFAULT_MAX_ROWS, MAX_RECOMMEND_USERS

DEFAULT_METRICS_PATH = "/monitoring/prometheus/metrics"
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Requests are small (ids, a few scalars); a parsed request takes up to ~18x its wire size (one object per
# string), so this bounds one request's memory to ~150 MB whatever it declares.
DEFAULT_MAX_REQUEST_BYTES = 8 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """TF Serving's BatchingParameters: a batch runs when full or `batch_timeout_micros` after its first task."""

    max_batch_size: int = 32
    batch_timeout_micros: int = 1000
    max_enqueued_batches: int = 100  # the queue holds this many full batches; beyond it, UNAVAILABLE
    num_batch_threads: int = 2  # shared by all queues
    # Not in TF Serving's file: one queue per (signature, scalar input values) is created on demand, so
    # their number is capped; a queue idle this long is dropped, and past the cap requests run unbatched.
    max_queues: int = 64
    idle_queue_seconds: float = 30.0


@dataclasses.dataclass(frozen=True)
class TlsOptions:
    """TF Serving's SSLConfig: PEM contents, not paths; client_verify requires a client certificate."""

    server_key: bytes
    server_cert: bytes
    custom_ca: bytes = b""
    client_verify: bool = False


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    """Everything `recsys serve` can be told; the CLI flags and the tests build this one object."""

    host: str = "127.0.0.1"  # loopback unless told otherwise (containers: --host 0.0.0.0)
    port: int = 8500
    rest_port: Optional[int] = None  # None: no REST API; 0: any free port
    poll_interval: float = 5.0
    max_workers: int = 8  # gRPC request threads; REST has as many workers of its own
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES  # responses (and requests, when smaller than the next)
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES  # a gRPC request or REST body; larger: refused unread
    request_memory_mb: int = 192  # estimated parsed size of the requests in flight (serving/budget.py)
    # Rows per request (users for recommend, tf.Examples for Regress/Classify), checked before allocation.
    max_rows: int = DEFAULT_MAX_ROWS
    row_limits: Tuple[Tuple[str, int], ...] = tuple(  # per signature: those scoring the whole catalogue per row
        (name, MAX_RECOMMEND_USERS) for name in (F.RECOMMEND, F.RECOMMEND_FILTERED, F.SIMILAR_ITEMS,
                                                 F.RECOMMEND_BY_FEATURES, F.RECOMMEND_BY_HISTORY))
    # ModelService.HandleReloadConfigRequest is answered only here, on loopback; None: nowhere.
    admin_port: Optional[int] = None
    model_roots: Tuple[str, ...] = ()  # a reloaded base_path must lie under one; () = the served dirs' parents
    # REST connections open at once, in all and from one address; at a cap the longest-idle one is closed to admit
    # the new one, which is refused only when every connection is busy (serving/connections.py).
    rest_max_connections: int = DEFAULT_MAX_CONNECTIONS
    rest_max_connections_per_client: int = DEFAULT_MAX_PER_CLIENT
    rest_timeout: float = 10.0  # seconds to send the headers (idle: nothing sent, or since the last answer) or body
    batching: Optional[BatchingOptions] = None
    tls: Optional[TlsOptions] = None
    metrics_path: Optional[str] = DEFAULT_METRICS_PATH  # served on the REST port; None turns it off
    drain_seconds: float = 10.0  # on SIGTERM, in-flight requests get this long to finish
    # Users' interactions newer than the model (a span root or a CSV file; serving/fresh_history.py), re-read every
    # fresh_history_refresh_s when changed; None: recommend scores from the model's stored histories alone.
    fresh_history: Optional[str] = None
    fresh_history_refresh_s: float = 60.0
    # A share of the Predict requests and answers written to this directory as TF Serving's request log
    # (PredictionLog TFRecords: serving/request_log.py), which `recsys run --serving-log` checks for skew.
    log_requests: Optional[str] = None
    log_sample_rate: float = 0.1

    @property
    def request_limit(self) -> int:
        return min(self.max_request_bytes, self.max_message_bytes)

    def row_limit(self, signature: str) -> int:
        return dict(self.row_limits).get(signature, self.max_rows)


# --- TF Serving's config messages, declared by name so their text files parse ---------------------

_MESSAGES: Tuple[Tuple[str, Tuple[Tuple[str, int, str], ...]], ...] = (
    ("BatchingParameters", (
        ("max_batch_size", 1, ".google.protobuf.Int64Value"),
        ("batch_timeout_micros", 2, ".google.protobuf.Int64Value"),
        ("max_enqueued_batches", 3, ".google.protobuf.Int64Value"),
        ("num_batch_threads", 4, ".google.protobuf.Int64Value"),
        ("thread_pool_name", 5, ".google.protobuf.StringValue"),
        ("allowed_batch_sizes", 6, "repeated int64"),
        ("pad_variable_length_inputs", 7, "bool"),
        ("enable_large_batch_splitting", 8, ".google.protobuf.BoolValue"),
        ("max_execution_batch_size", 9, ".google.protobuf.Int64Value"),
    )),
    ("SSLConfig", (("server_key", 1, "string"), ("server_cert", 2, "string"), ("custom_ca", 3, "string"),
                   ("client_verify", 4, "bool"))),
    ("PrometheusConfig", (("enable", 1, "bool"), ("path", 2, "string"))),
    ("MonitoringConfig", (("prometheus_config", 1, ".recsys.tfserving.PrometheusConfig"),)),
)
_SCALARS = {"string": 9, "bool": 8, "int64": 3}


def _message_classes():
    wrappers_pb2.Int64Value  # noqa: B018  (puts wrappers.proto in the default pool)
    file = descriptor_pb2.FileDescriptorProto(name="recsys/tf_serving_configs.proto", package="recsys.tfserving",
                                              dependency=["google/protobuf/wrappers.proto"], syntax="proto3")
    for name, fields in _MESSAGES:
        message = file.message_type.add(name=name)
        for field_name, number, kind in fields:
            repeated = kind.startswith("repeated ")
            kind = kind.split()[-1]
            field = message.field.add(name=field_name, number=number, label=3 if repeated else 1)
            if kind in _SCALARS:
                field.type = _SCALARS[kind]
            else:
                field.type, field.type_name = 11, kind
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(file.name)
    except KeyError:
        pool.Add(file)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"recsys.tfserving.{name}"))
            for name, _ in _MESSAGES}


_CLASSES = _message_classes()


def _parse(path: str, message_name: str):
    import tensorflow as tf  # here, so `recsys --help` (which imports the defaults above) stays instant

    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    with tf.io.gfile.GFile(path) as f:
        try:
            return text_format.Parse(f.read(), _CLASSES[message_name]())
        except text_format.ParseError as e:
            raise ValueError(f"{path}: not a {message_name}: {e}") from None


def read_batching_parameters_file(path: str) -> BatchingOptions:
    params, default = _parse(path, "BatchingParameters"), BatchingOptions()
    values = {f.name: getattr(params, f.name).value if params.HasField(f.name) else getattr(default, f.name)
              for f in dataclasses.fields(BatchingOptions) if f.name in params.DESCRIPTOR.fields_by_name}
    options = BatchingOptions(**values)
    if min(options.max_batch_size, options.max_enqueued_batches, options.num_batch_threads) < 1:
        raise ValueError(f"{path}: max_batch_size, max_enqueued_batches and num_batch_threads must be positive")
    return options


def read_ssl_config_file(path: str) -> TlsOptions:
    config = _parse(path, "SSLConfig")
    if not config.server_key or not config.server_cert:
        raise ValueError(f"{path}: an SSLConfig needs server_key and server_cert (PEM contents)")
    if config.client_verify and not config.custom_ca:
        raise ValueError(f"{path}: client_verify needs custom_ca (the CA that signs client certificates)")
    return TlsOptions(config.server_key.encode(), config.server_cert.encode(), config.custom_ca.encode(),
                      config.client_verify)


def read_monitoring_config_file(path: str) -> Optional[str]:
    """The metrics path, or None when Prometheus export is disabled in the file."""
    config = _parse(path, "MonitoringConfig").prometheus_config
    return (config.path or DEFAULT_METRICS_PATH) if config.enable else None
