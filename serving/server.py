"""TensorFlow Serving's gRPC API (PredictionService, ModelService, Health) and REST API over a model directory.

TF Serving's binary cannot be installed here, so this server answers the same protos with the same
status codes (listed in serving/inference.py); clients written for TF Serving work unchanged, and
production runs the real `tensorflow/serving` image on the same directory (serving/deploy/).
"""

from __future__ import annotations

import dataclasses
import logging
import posixpath
import signal
import threading
import time
from concurrent import futures
from typing import Optional, Tuple

import grpc
import tensorflow as tf
from google.protobuf import text_format
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from serving import budget as B
from serving import connections
from serving.batching import DEADLINE, Batcher
from serving.fresh_history import FreshHistories
from serving.inference import Inference, answer
from serving.metrics import RequestMetrics
from serving.model_store import Models, normalized_path, single_model_config
from serving.options import ServerOptions
from serving.request_log import RequestLog
from serving.rest import RestServer

log = logging.getLogger(__name__)

ADMIN_HOST = "127.0.0.1"  # model management is reachable from this machine only


def read_model_config_file(path: str) -> model_server_config_pb2.ModelServerConfig:
    """TF Serving's --model_config_file: a ModelServerConfig in protobuf text format."""
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    with tf.io.gfile.GFile(path) as f:
        try:
            return text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
        except text_format.ParseError as e:
            raise ValueError(f"{path}: not a ModelServerConfig: {e}") from None


def _rpc(api: str, method: str):
    """A servicer method that runs `self._inference.<method>` through the shared answer().

    The client's deadline goes along (batching.DEADLINE), so a request that expired while queued is
    dropped instead of run. Requests arrive wrapped by the memory budget (serving/budget.py); the
    reservation is released once the answer is built.
    """

    def handle(self, request, context):
        if isinstance(request, B.OverBudget):
            log.warning("%s: RESOURCE_EXHAUSTED: %s", api, request)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(request))
        reservation = request.reservation
        remaining = context.time_remaining()
        token = DEADLINE.set(time.monotonic() + remaining if remaining is not None else None)
        try:
            # The message lives only in _answer's frame: released below, it is already freed.
            response, error = self._answer(api, method, request.take())
        finally:
            DEADLINE.reset(token)
            reservation.release()
        if error is not None:
            context.abort(error.code, str(error))
        return response

    handle.__name__ = api
    return handle


class _Servicer:
    def __init__(self, inference: Inference, metrics: Optional[RequestMetrics]):
        self._inference, self._metrics = inference, metrics

    def _answer(self, api: str, method: str, request):
        return answer(api, getattr(request, "model_spec", None),
                      lambda: getattr(self._inference, method)(request), self._metrics)


class PredictionService(_Servicer):
    Predict = _rpc("Predict", "predict")
    Regress = _rpc("Regress", "regress")
    Classify = _rpc("Classify", "classify")
    MultiInference = _rpc("MultiInference", "multi_inference")
    GetModelMetadata = _rpc("GetModelMetadata", "metadata")


class ModelService(_Servicer):
    """GetModelStatus everywhere; HandleReloadConfigRequest only on the loopback admin port."""

    def __init__(self, inference: Inference, metrics: Optional[RequestMetrics], admin: bool = False):
        super().__init__(inference, metrics)
        self._admin = admin

    GetModelStatus = _rpc("GetModelStatus", "status")
    _reload = _rpc("HandleReloadConfigRequest", "reload")

    def HandleReloadConfigRequest(self, request, context):  # noqa: N802 (the proto's name)
        if self._admin:
            return self._reload(request, context)
        if isinstance(request, B.Budgeted):
            request.take()  # the unread message is freed before its reservation is released
            request.reservation.release()
        message = "model management is answered only on the admin port (recsys serve --admin-port, loopback)"
        log.warning("HandleReloadConfigRequest from %s: PERMISSION_DENIED: %s", context.peer(), message)
        context.abort(grpc.StatusCode.PERMISSION_DENIED, message)


class ModelServer:
    """The gRPC server, the REST server when asked for, and what they serve; stop() drains both."""

    def __init__(self, grpc_server: grpc.Server, port: int, rest: Optional[RestServer], models: Models,
                 batcher: Optional[Batcher], health_servicer: health.HealthServicer, metrics: RequestMetrics,
                 admin: Optional[Tuple[grpc.Server, int]] = None, fresh: Optional[FreshHistories] = None,
                 request_log: Optional[RequestLog] = None):
        self.grpc_server, self.port, self.rest, self.models = grpc_server, port, rest, models
        self.batcher, self.health, self.metrics = batcher, health_servicer, metrics
        self.admin_server, self.admin_port = admin or (None, None)
        self.fresh = fresh  # the fresh histories (--fresh-history), refreshed on their own thread
        self.request_log = request_log  # --log-requests: written on its own thread, closed last

    @property
    def rest_port(self) -> Optional[int]:
        return self.rest.port if self.rest else None

    def stop(self, grace: Optional[float] = None) -> threading.Event:
        """Refuses new requests, lets those in flight finish (up to `grace` seconds), then unloads."""
        self.health.enter_graceful_shutdown()
        stopped = self.grpc_server.stop(grace)
        if self.admin_server:
            self.admin_server.stop(grace)
        if self.rest:
            self.rest.stop(grace)
        stopped.wait()
        if self.batcher:
            self.batcher.stop()
        if self.fresh:
            self.fresh.stop()
        if self.request_log:
            self.request_log.close()  # after the drain: every answered request's record is in a published file
        self.models.stop()
        return stopped


def build_server(
    model_name: str = "",
    base_path: str = "",
    port: Optional[int] = None,
    host: Optional[str] = None,
    poll_interval: Optional[float] = None,
    max_workers: Optional[int] = None,
    config: Optional[model_server_config_pb2.ModelServerConfig] = None,
    options: Optional[ServerOptions] = None,
) -> Tuple[ModelServer, int, Models]:
    """Starts a server for one model (name, base path) or a whole ModelServerConfig.

    Keyword arguments override the same fields of `options`. Returns the server, the bound gRPC
    port (port=0 picks a free one) and the live model registry.
    """
    B.return_large_frees_to_the_os()  # large parsed requests leave no RSS behind once answered
    open_file_limit = connections.raise_open_file_limit()  # thousands of clients need thousands of descriptors
    overrides = {"port": port, "host": host, "poll_interval": poll_interval, "max_workers": max_workers}
    options = dataclasses.replace(options or ServerOptions(), **{k: v for k, v in overrides.items() if v is not None})
    config = config or single_model_config(model_name, base_path)
    metrics = RequestMetrics()
    fresh = None
    if options.fresh_history:
        fresh = FreshHistories(options.fresh_history, options.fresh_history_refresh_s, registry=metrics.registry)
    request_log = None
    if options.log_requests:
        request_log = RequestLog(options.log_requests, options.log_sample_rate, registry=metrics.registry)
    models = Models(options.poll_interval)
    batcher = Batcher(options.batching, models.serves) if options.batching else None
    # A reload may point models only below these: given by flag, else the initial models' parent dirs.
    roots = options.model_roots or tuple(sorted({posixpath.dirname(normalized_path(m.base_path).rstrip("/"))
                                                 for m in config.model_config_list.config}))
    inference = Inference(models, batcher, options, roots, fresh, request_log)
    models.warmup = inference.warm_up
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)  # the process answers; models may still load
    credentials = None
    if options.tls:
        credentials = grpc.ssl_server_credentials(
            [(options.tls.server_key, options.tls.server_cert)],
            root_certificates=options.tls.custom_ca or None, require_client_auth=options.tls.client_verify)

    budget = B.MemoryBudget(options.request_memory_mb << 20)  # shared by gRPC, the admin port and REST

    def grpc_server(host: str, port: int, workers: int, admin: bool) -> Tuple[grpc.Server, int]:
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="admin" if admin else "grpc"),
            options=[("grpc.max_receive_message_length", options.request_limit),
                     ("grpc.max_send_message_length", options.max_message_bytes)],
            maximum_concurrent_rpcs=workers * 4)  # beyond: RESOURCE_EXHAUSTED before the message is read
        services = [(B.MODEL_SERVICE, ModelService(inference, metrics, admin))]
        if not admin:
            services.append((B.PREDICTION_SERVICE, PredictionService(inference, metrics)))
        server.add_generic_rpc_handlers([B.generic_handler(service, servicer, budget)
                                         for service, servicer in services])
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        address = f"{host}:{port}"
        try:  # grpcio < 1.60 returns 0 when the port cannot be bound; later versions raise RuntimeError
            bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
        except RuntimeError:
            bound = 0
        if bound == 0:
            raise OSError(f"cannot listen on {address} for {'model management' if admin else 'gRPC'}: the address "
                          f"is in use or not available here (choose another {'--admin-port' if admin else '--port'})")
        return server, bound

    # The ports first: one in use is refused in a line before a large model spends minutes loading.
    server = admin = rest = None
    try:
        server, bound = grpc_server(options.host, options.port, options.max_workers, admin=False)
        admin = grpc_server(ADMIN_HOST, options.admin_port, 2, admin=True) if options.admin_port is not None else None
        if options.rest_port is not None:
            try:
                rest = RestServer(inference, options.host, options.rest_port, metrics, options.metrics_path,
                                  options.request_limit, tls=options.tls, workers=options.max_workers, budget=budget,
                                  max_connections=connections.connection_cap(options.rest_max_connections,
                                                                             open_file_limit),
                                  max_per_client=options.rest_max_connections_per_client,
                                  timeout=options.rest_timeout)
            except OSError as e:
                raise OSError(f"cannot listen on {options.host}:{options.rest_port} for REST: {e.strerror} (choose "
                              f"another --rest-port, or 0 for no REST)") from None
        models.apply(config)
        if fresh:
            fresh.start()  # an unreadable source is refused here, before the server answers anything
    except BaseException:
        for unstarted in (server, admin[0] if admin else None):
            if unstarted is not None:
                unstarted.stop(None)
        if rest:
            rest.stop()
        models.stop()
        if batcher:
            batcher.stop()
        if fresh:
            fresh.stop()
        if request_log:
            request_log.close()
        raise
    server.start()
    if admin:
        admin[0].start()
    if rest:
        rest.start()
    return (ModelServer(server, bound, rest, models, batcher, health_servicer, metrics, admin, fresh, request_log),
            bound, models)


def serve(model_name: str, base_path: str, options: ServerOptions = ServerOptions(),
          model_config_file: Optional[str] = None) -> None:
    """Runs until SIGINT/SIGTERM, then stops accepting requests and drains the ones in flight."""
    # The server's own records at INFO (what it loaded, where it listens); the libraries it imports only when they
    # warn (TFX/Beam log every optional module they did not find at INFO).
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger(__name__.split(".")[0]).setLevel(logging.INFO)
    config = read_model_config_file(model_config_file) if model_config_file else None
    if config is None and not tf.io.gfile.isdir(base_path):
        raise FileNotFoundError(f"model directory {base_path} does not exist (run the pipeline first)")
    server, bound, models = build_server(model_name, base_path, config=config, options=options)
    for name, store in models.stores.items():
        versions = ", ".join(map(str, store.versions())) or "(none yet: waiting for a push)"
        log.info("serving %s version %s (from %s)", name, versions, store.base_path)
    log.info("gRPC on %s port %d%s%s%s%s%s%s", options.host, bound, " (TLS)" if options.tls else "",
             f", REST on port {server.rest_port}" if server.rest else "",
             f", model management on {ADMIN_HOST}:{server.admin_port}" if server.admin_server else
             ", model management off (no --admin-port)",
             ", batching on" if options.batching else "",
             f", fresh histories from {options.fresh_history} (every {options.fresh_history_refresh_s:g} s)"
             if options.fresh_history else "",
             f", {100 * options.log_sample_rate:g} % of Predict requests logged to {options.log_requests}"
             if options.log_requests else "")
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    log.info("shutting down: draining in-flight requests (up to %.0f s)", options.drain_seconds)
    server.stop(grace=options.drain_seconds)
    log.info("stopped")
