"""TensorFlow Serving's gRPC API (PredictionService, ModelService) over a pushed model directory.

TF Serving's binary cannot be installed here, so this server answers the same protos with the same
status codes; clients written for TF Serving work unchanged, and production runs the real
`tensorflow/serving` image on the same directory (serving/deploy/).

Status codes (TF Serving's own where it has one for the case):
  NOT_FOUND            unknown model, version or version_label; no version loaded yet
  FAILED_PRECONDITION  unknown signature_name (TF Serving's Predict answers exactly this), Regress on a
                       signature that is not one tf.Example in, one value out, a label on an unavailable version
  INVALID_ARGUMENT     missing, unexpected, wrongly typed or wrongly shaped inputs (the message names
                       the input), unknown output_filter alias, unsupported metadata_field
  UNIMPLEMENTED        Classify, MultiInference
  INTERNAL             anything else; the server logs one line per refused request and keeps serving
"""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from typing import Dict, Optional, Tuple

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
    status_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

from components import features as F
from serving.model_store import (
    DEFAULT_POLL_INTERVAL_S,
    LabelError,
    LoadedVersion,
    ModelStore,
    VersionNotFound,
    VersionPolicy,
)

log = logging.getLogger(__name__)

SIGNATURE_DEF_FIELD = "signature_def"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class RequestError(Exception):
    """A request the server refuses, with the gRPC code TF Serving uses for it."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


def single_model_config(name: str, base_path: str) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add(name=name, base_path=base_path, model_platform="tensorflow")
    model.model_version_policy.latest.num_versions = 1
    return config


def read_model_config_file(path: str) -> model_server_config_pb2.ModelServerConfig:
    """TF Serving's --model_config_file: a ModelServerConfig in protobuf text format."""
    with tf.io.gfile.GFile(path) as f:
        try:
            return text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
        except text_format.ParseError as e:
            raise ValueError(f"{path}: not a ModelServerConfig: {e}") from None


def _policy(model: model_server_config_pb2.ModelConfig) -> VersionPolicy:
    policy = model.model_version_policy
    kind = policy.WhichOneof("policy_choice") or "latest"
    if kind == "specific":
        return VersionPolicy("specific", versions=tuple(policy.specific.versions))
    if kind == "all":
        return VersionPolicy("all")
    return VersionPolicy("latest", num_versions=policy.latest.num_versions or 1)


class _Models:
    """The model stores by name, as the current ModelServerConfig says; resolves a ModelSpec to a version."""

    def __init__(self, poll_interval: float):
        self.poll_interval = poll_interval
        self.stores: Dict[str, ModelStore] = {}
        self._lock = threading.Lock()

    def apply(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Adds, reconfigures and removes models; a new store is loaded before it becomes visible."""
        with self._lock:
            stores = {}
            for model in config.model_config_list.config:
                store = self.stores.get(model.name)
                if store is None or store.base_path != model.base_path:
                    store = ModelStore(model.name, model.base_path, self.poll_interval)
                    store.configure(_policy(model), dict(model.version_labels))
                    store.start()
                else:
                    store.configure(_policy(model), dict(model.version_labels))
                stores[model.name] = store
            removed = [s for name, s in self.stores.items() if stores.get(name) is not s]
            self.stores = stores
        for store in removed:
            store.stop()

    def stop(self) -> None:
        for store in self.stores.values():
            store.stop()

    def store(self, name: str) -> ModelStore:
        store = self.stores.get(name)
        if store is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name})")
        return store

    def resolve(self, spec) -> LoadedVersion:
        store = self.store(spec.name)
        try:
            return store.get(spec.version.value if spec.HasField("version") else None,
                             label=spec.version_label or None)
        except VersionNotFound as e:
            raise RequestError(grpc.StatusCode.NOT_FOUND, str(e)) from None


def _convert_inputs(request: predict_pb2.PredictRequest, function) -> Dict[str, tf.Tensor]:
    _, specs = function.structured_input_signature
    given, expected = set(request.inputs), set(specs)
    if given != expected:
        missing, extra = sorted(expected - given), sorted(given - expected)
        detail = "; ".join(filter(None, [missing and f"missing input(s): {', '.join(missing)}",
                                         extra and f"unexpected input(s): {', '.join(extra)}"]))
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input size does not match signature: {detail} (expects {', '.join(sorted(expected))})")
    tensors = {}
    for name, spec in specs.items():
        proto = request.inputs[name]
        if proto.dtype != spec.dtype.as_datatype_enum:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"Expects arg[{name}] to be {spec.dtype.name} "
                                                                 f"but {_dtype_name(proto.dtype)} is provided")
        try:
            value = tf.make_ndarray(proto)
        except Exception as e:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"input {name}: malformed TensorProto: {e}") from None
        if not spec.shape.is_compatible_with(value.shape):
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"input {name}: shape {list(value.shape)} does not match the signature's {spec.shape}")
        tensors[name] = tf.constant(value, dtype=spec.dtype)
    return tensors


def _dtype_name(enum: int) -> str:
    try:
        return tf.dtypes.as_dtype(enum).name
    except TypeError:  # DT_INVALID or a number no DType has
        return f"dtype enum {enum}"


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, models: _Models):
        self._models = models

    def Predict(self, request, context):
        return _answer(context, "Predict", lambda: self._predict(request))

    def _predict(self, request) -> predict_pb2.PredictResponse:
        loaded = self._models.resolve(request.model_spec)
        signature = request.model_spec.signature_name or F.SERVING_DEFAULT
        function = loaded.functions.get(signature)
        if function is None:
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{signature}" not found.')
        inputs = _convert_inputs(request, function)
        unknown = sorted(set(request.output_filter) - set(function.structured_outputs))
        if unknown:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"output tensor alias not found in signature: {', '.join(unknown)}")
        try:
            outputs = function(**inputs)
        except (tf.errors.InvalidArgumentError, ValueError) as e:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, str(e).splitlines()[0]) from None
        response = predict_pb2.PredictResponse()
        _fill_spec(response.model_spec, request.model_spec.name, loaded.version, signature)
        for name, value in outputs.items():
            if not request.output_filter or name in request.output_filter:
                response.outputs[name].CopyFrom(tf.make_tensor_proto(np.asarray(value)))
        return response

    def Regress(self, request, context):
        return _answer(context, "Regress", lambda: self._regress(request))

    def _regress(self, request) -> regression_pb2.RegressionResponse:
        """tf.Examples through the rating signature (serving_default unless named): one value each."""
        if request.input.WhichOneof("kind") != "example_list":
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "Regress takes input.example_list")
        loaded = self._models.resolve(request.model_spec)
        signature = request.model_spec.signature_name or F.SERVING_DEFAULT
        function = loaded.functions.get(signature)
        _, specs = function.structured_input_signature if function else (None, {})
        if function is None or list(specs) != [F.EXAMPLES_INPUT] or len(function.structured_outputs) != 1:
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                               f'Signature "{signature}" is not a regression signature (one tf.Example input, '
                               "one output)")
        serialized = [e.SerializeToString() for e in request.input.example_list.examples]
        (values,) = function(**{F.EXAMPLES_INPUT: tf.constant(serialized, tf.string)}).values()
        response = regression_pb2.RegressionResponse()
        _fill_spec(response.model_spec, request.model_spec.name, loaded.version, signature)
        for value in np.asarray(values).reshape(-1):
            response.result.regressions.add(value=float(value))
        return response

    def GetModelMetadata(self, request, context):
        return _answer(context, "GetModelMetadata", lambda: self._metadata(request))

    def _metadata(self, request) -> get_model_metadata_pb2.GetModelMetadataResponse:
        unsupported = [f for f in request.metadata_field if f != SIGNATURE_DEF_FIELD]
        if not request.metadata_field or unsupported:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Metadata field {', '.join(unsupported) or '(none)'} is not supported; "
                               f"use {SIGNATURE_DEF_FIELD}")
        loaded = self._models.resolve(request.model_spec)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature_def in loaded.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(signature_def)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        _fill_spec(response.model_spec, request.model_spec.name, loaded.version)
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
        return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, models: _Models):
        self._models = models

    def HandleReloadConfigRequest(self, request, context):
        return _answer(context, "HandleReloadConfigRequest", lambda: self._reload(request))

    def _reload(self, request) -> model_management_pb2.ReloadConfigResponse:
        if request.config.WhichOneof("config") != "model_config_list":
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "only model_config_list configs are supported")
        try:
            self._models.apply(request.config)
        except LabelError as e:
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION, str(e)) from None
        log.info("model config reloaded: %s", ", ".join(
            f"{m.name} {dict(m.version_labels) or ''}".strip() for m in request.config.model_config_list.config))
        return model_management_pb2.ReloadConfigResponse(status=status_pb2.StatusProto(error_code=0))

    def GetModelStatus(self, request, context):
        return _answer(context, "GetModelStatus", lambda: self._status(request))

    def _status(self, request) -> get_model_status_pb2.GetModelStatusResponse:
        store = self._models.store(request.model_spec.name)
        versions = store.versions()
        if request.model_spec.HasField("version"):
            wanted = request.model_spec.version.value
            if wanted not in versions:
                raise RequestError(grpc.StatusCode.NOT_FOUND,
                                   f"Could not find version {wanted} of model {request.model_spec.name}")
            versions = [wanted]
        if not versions:
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"Could not find any versions of model {request.model_spec.name}")
        response = get_model_status_pb2.GetModelStatusResponse()
        for version in versions:
            response.model_version_status.add(
                version=version,
                state=get_model_status_pb2.ModelVersionStatus.AVAILABLE,
                status=status_pb2.StatusProto(error_code=0, error_message=""),
            )
        return response


def _fill_spec(spec, name: str, version: int, signature: Optional[str] = None) -> None:
    spec.name = name
    spec.version.value = version
    if signature:
        spec.signature_name = signature


def _answer(context, method: str, handler):
    try:
        return handler()
    except RequestError as e:
        log.warning("%s: %s: %s", method, e.code.name, e)
        context.abort(e.code, str(e))
    except Exception as e:  # never crash the server on a request
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        log.error("%s: INTERNAL: %s", method, message)
        context.abort(grpc.StatusCode.INTERNAL, message)


def build_server(
    model_name: str = "",
    base_path: str = "",
    port: int = 8500,
    host: str = "[::]",
    poll_interval: float = DEFAULT_POLL_INTERVAL_S,
    max_workers: int = 8,
    config: Optional[model_server_config_pb2.ModelServerConfig] = None,
) -> Tuple[grpc.Server, int, "_Models"]:
    """Starts a server for one model (name, base path) or a whole ModelServerConfig.

    Returns the server, the bound port (port=0 picks a free one) and the live model registry.
    """
    models = _Models(poll_interval)
    models.apply(config or single_model_config(model_name, base_path))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers),
        options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                 ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(models), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(models), server)
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)  # the process answers; models may still load
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        models.stop()
        raise OSError(f"cannot listen on {host}:{port} (port in use?)")
    server.start()
    return server, bound, models


def serve(model_name: str, base_path: str, port: int = 8500, host: str = "[::]",
          poll_interval: float = DEFAULT_POLL_INTERVAL_S, max_workers: int = 8,
          model_config_file: Optional[str] = None) -> None:
    """Runs until SIGINT/SIGTERM, then stops accepting requests and drains the ones in flight."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = read_model_config_file(model_config_file) if model_config_file else None
    if config is None and not tf.io.gfile.isdir(base_path):
        raise FileNotFoundError(f"model directory {base_path} does not exist (run the pipeline first)")
    server, bound, models = build_server(model_name, base_path, port, host, poll_interval, max_workers, config)
    for name, store in models.stores.items():
        versions = ", ".join(map(str, store.versions())) or "(none yet: waiting for a push)"
        log.info("serving %s version %s on port %d (from %s)", name, versions, bound, store.base_path)
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    log.info("shutting down: draining in-flight requests")
    server.stop(grace=5).wait()
    models.stop()
