"""TensorFlow Serving's gRPC API (PredictionService, ModelService) over a pushed model directory.

TF Serving's binary cannot be installed here, so this server answers the same protos with the same
status codes; clients written for TF Serving work unchanged, and production runs the real
`tensorflow/serving` image on the same directory (serving/deploy/).
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
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    status_pb2,
)

from components import features as F
from serving.model_store import LoadedVersion, ModelStore, VersionNotFound

log = logging.getLogger(__name__)

SIGNATURE_DEF_FIELD = "signature_def"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class RequestError(Exception):
    """A request the server refuses, with the gRPC code TF Serving uses for it."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


class _Models:
    """The model stores by name; resolves a ModelSpec to one loaded version."""

    def __init__(self, stores: Dict[str, ModelStore]):
        self.stores = stores

    def store(self, name: str) -> ModelStore:
        if name not in self.stores:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name})")
        return self.stores[name]

    def resolve(self, spec) -> LoadedVersion:
        store = self.store(spec.name)
        if spec.version_label:
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"Unrecognized servable version label: {spec.version_label} for model {spec.name}")
        try:
            return store.get(spec.version.value if spec.HasField("version") else None)
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
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Expects arg[{name}] to be {spec.dtype.name} but {tf.dtypes.as_dtype(proto.dtype).name} is provided")
        try:
            value = tf.make_ndarray(proto)
        except Exception as e:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"input {name}: malformed TensorProto: {e}") from None
        if not spec.shape.is_compatible_with(value.shape):
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"input {name}: shape {list(value.shape)} does not match the signature's {spec.shape}")
        tensors[name] = tf.constant(value, dtype=spec.dtype)
    return tensors


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
        log.error("%s: INTERNAL: %s", method, e)
        context.abort(grpc.StatusCode.INTERNAL, str(e).splitlines()[0] if str(e) else type(e).__name__)


def build_server(
    model_name: str,
    base_path: str,
    port: int = 8500,
    host: str = "[::]",
    poll_interval: float = 5.0,
    max_workers: int = 8,
) -> Tuple[grpc.Server, int, ModelStore]:
    """Starts a server; returns it, the bound port (port=0 picks a free one) and the model store."""
    store = ModelStore(model_name, base_path, poll_interval=poll_interval)
    store.start()
    models = _Models({model_name: store})
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers),
        options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                 ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(models), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(models), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        store.stop()
        raise OSError(f"cannot listen on {host}:{port} (port in use?)")
    server.start()
    return server, bound, store


def serve(model_name: str, base_path: str, port: int = 8500, host: str = "[::]",
          poll_interval: float = 5.0, max_workers: int = 8) -> None:
    """Runs until SIGINT/SIGTERM, then stops accepting requests and drains the ones in flight."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if not tf.io.gfile.isdir(base_path):
        raise FileNotFoundError(f"model directory {base_path} does not exist (run the pipeline first)")
    server, bound, store = build_server(model_name, base_path, port, host, poll_interval, max_workers)
    versions = store.versions()
    log.info("serving model %s version(s) %s from %s on port %d", model_name,
             ", ".join(map(str, versions)) or "(none yet: waiting for a push)", base_path, bound)
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    log.info("shutting down: draining in-flight requests")
    server.stop(grace=5).wait()
    store.stop()
