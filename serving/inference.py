"""What TF Serving's PredictionService and ModelService answer, independent of gRPC or REST.

Both transports turn their request into the tensorflow-serving-api proto, call one method here and
turn the response (or the RequestError) back; so REST and gRPC answer the same inputs with the same
values and the same status codes.

Status codes (TF Serving's own where it has one for the case):
  NOT_FOUND            unknown model, version or version_label; no version loaded yet
  FAILED_PRECONDITION  unknown signature_name (TF Serving's Predict answers exactly this), a label
                       on an unavailable version
  INVALID_ARGUMENT     missing, unexpected, wrongly typed or wrongly shaped inputs (the message names
                       the input); a TensorProto whose values do not fill its declared shape; more
                       rows than the signature's limit; more history items per row than
                       MAX_HISTORY_ITEMS; Regress/Classify on a signature whose method name is not
                       regress/classify; unknown output_filter alias; unsupported metadata_field; an
                       empty or duplicate-name model config
  PERMISSION_DENIED    a reloaded config's base_path outside the allowed model roots; a reload on a
                       port that is not the admin port
  DEADLINE_EXCEEDED    the client's deadline passed before the request ran
  UNAVAILABLE          the batch queue is full (batching on)
  INTERNAL             anything else; the server logs one line per refused request and keeps serving
"""

from __future__ import annotations

import logging
import re
import time
from typing import Callable, Dict, Optional, Sequence

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    predict_pb2,
    prediction_log_pb2,
    regression_pb2,
    status_pb2,
)

from components import features as F
from serving import batching, limits
from serving.fresh_history import FreshHistories
from serving.model_store import ConfigError, LabelError, LoadedVersion, Models, VersionNotFound, under_roots
from serving.options import ServerOptions
from serving.request_log import RequestLog

log = logging.getLogger(__name__)

SIGNATURE_DEF_FIELD = "signature_def"
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit


class RequestError(Exception):
    """A request the server refuses, with the gRPC code TF Serving uses for it."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


# recommend_by_history's [rows, L] inputs: L (items per row) is bounded by limits.MAX_HISTORY_ITEMS.
HISTORY_INPUTS = frozenset({F.HISTORY_ITEMS_INPUT, F.HISTORY_WEIGHTS_INPUT})
# Answered through recommend_by_history when the server holds fresh histories (serving/fresh_history.py).
FRESH_SIGNATURES = frozenset({F.RECOMMEND, F.RECOMMEND_FILTERED})


def _convert_inputs(inputs, function, signature: str, row_limit: int) -> Dict[str, np.ndarray]:
    """Checks TensorProtos against the signature before building arrays. Names the first bad input.

    Names, dtypes, declared shapes, the row limit, the history length (items per row of
    HISTORY_INPUTS) and whether the values fill the declared shape exactly are all checked on the
    proto, so a tiny request declaring a huge tensor allocates nothing.
    """
    _, specs = function.structured_input_signature
    given, expected = set(inputs), set(specs)
    if given != expected:
        missing, extra = sorted(expected - given), sorted(given - expected)
        detail = "; ".join(filter(None, [missing and f"missing input(s): {', '.join(missing)}",
                                         extra and f"unexpected input(s): {', '.join(extra)}"]))
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input size does not match signature: {detail} (expects {', '.join(sorted(expected))})")
    arrays = {}
    for name, spec in specs.items():
        proto = inputs[name]
        if proto.dtype != spec.dtype.as_datatype_enum:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"Expects arg[{name}] to be {spec.dtype.name} "
                                                                 f"but {_dtype_name(proto.dtype)} is provided")
        try:
            dims = limits.declared_shape(proto, name)
            if not spec.shape.is_compatible_with(dims):
                raise limits.LimitError(f"input {name}: shape {dims} does not match the signature's {spec.shape}")
            if dims and dims[0] > row_limit:
                raise limits.LimitError(f"input {name}: {dims[0]} rows exceed the limit of {row_limit} rows per "
                                        f"request for signature \"{signature}\"")
            if name in HISTORY_INPUTS and len(dims) > 1 and dims[1] > limits.MAX_HISTORY_ITEMS:
                raise limits.LimitError(f"input {name}: {dims[1]} items per row exceed the history limit of "
                                        f"{limits.MAX_HISTORY_ITEMS} (send the newest {limits.MAX_HISTORY_ITEMS})")
            limits.check_content(proto, name, dims)
        except limits.LimitError as e:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
        try:
            value = tf.make_ndarray(proto)  # numeric tensor_content is read in place, not element by element
        except Exception as e:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"input {name}: malformed TensorProto: {e}") from None
        arrays[name] = value
    # Inputs may differ in length (recommend_filtered's lists apply to the whole request), as on TF Serving;
    # the signature itself refuses a real mismatch.
    return arrays


def _tf_error_message(error: Exception) -> str:
    """The cause of a TF runtime error in one line (its text is a node trace ending with the cause)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip() and not line.strip().startswith("[[")]
    if not lines:
        return type(error).__name__
    return re.sub(r"\s*\[\[.*$", "", lines[-1] if lines[0].startswith("Graph execution error") else lines[0])


def _dtype_name(enum: int) -> str:
    try:
        return tf.dtypes.as_dtype(enum).name
    except TypeError:  # DT_INVALID or a number no DType has
        return f"dtype enum {enum}"


def _fill_tensor_proto(proto, array: np.ndarray) -> None:
    """An output tensor written straight into the response: numbers as one packed buffer.

    tf.make_tensor_proto checks every element and builds a separate proto to copy; this is ~4x
    cheaper for the small outputs a request returns.
    """
    is_string = array.dtype == object or array.dtype.kind == "S"
    proto.dtype = (tf.string if is_string else tf.as_dtype(array.dtype)).as_datatype_enum
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    if is_string:
        proto.string_val.extend(array.ravel().tolist())
    else:
        proto.tensor_content = np.ascontiguousarray(array).tobytes()


def _fill_spec(spec, name: str, version: int, signature: Optional[str] = None) -> None:
    spec.name = name
    spec.version.value = version
    if signature:
        spec.signature_name = signature


def signature_function(loaded: LoadedVersion, name: str):
    """The named signature of a loaded version, or TF Serving's FAILED_PRECONDITION."""
    function = loaded.functions.get(name)
    if function is None:
        raise RequestError(grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{name}" not found.')
    return function


def _serialized_examples(model_input, limit: int, signature: str) -> tf.Tensor:
    """input.example_list, or example_list_with_context with the context merged into each example."""
    kind = model_input.WhichOneof("kind")
    given = getattr(model_input, kind).examples if kind else ()
    if len(given) > limit:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"{len(given)} examples exceed the limit of {limit} "
                                                             f"rows per request for signature \"{signature}\"")
    if kind == "example_list":
        examples = list(model_input.example_list.examples)
    elif kind == "example_list_with_context":
        context = model_input.example_list_with_context.context
        examples = []
        for example in model_input.example_list_with_context.examples:
            merged = tf.train.Example()
            merged.CopyFrom(context)
            merged.MergeFrom(example)
            examples.append(merged)
    else:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "Input is empty")
    if not examples:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "Input is empty")
    return tf.constant([e.SerializeToString() for e in examples], tf.string)


class Inference:
    """PredictionService and ModelService methods over proto requests; raises RequestError."""

    def __init__(self, models: Models, batcher: Optional[batching.Batcher] = None,
                 options: ServerOptions = ServerOptions(), model_roots: Sequence[str] = (),
                 fresh: Optional[FreshHistories] = None, request_log: Optional[RequestLog] = None):
        """`model_roots`: where a reloaded config's base paths may point (see reload). `fresh`: users' interactions
        newer than the model (serving/fresh_history.py), scored from and left out by recommend(_filtered).
        `request_log`: where a sample of the answered Predict requests goes (serving/request_log.py)."""
        self.models, self.batcher, self.options = models, batcher, options
        self.model_roots = tuple(model_roots)
        self.fresh, self.request_log = fresh, request_log

    # --- PredictionService -------------------------------------------------------------------------

    def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        return self.predict_on(self.models.resolve(request.model_spec), request)

    def predict_on(self, loaded: LoadedVersion, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        signature = request.model_spec.signature_name or F.SERVING_DEFAULT
        function = signature_function(loaded, signature)
        inputs = _convert_inputs(request.inputs, function, signature, self.options.row_limit(signature))
        unknown = sorted(set(request.output_filter) - set(function.structured_outputs))
        if unknown:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"output tensor alias not found in signature: {', '.join(unknown)}")
        fresh = self._with_fresh_history(loaded, signature, inputs)
        outputs = self._call(*fresh) if fresh else self._call(function, inputs)
        response = predict_pb2.PredictResponse()
        _fill_spec(response.model_spec, request.model_spec.name, loaded.version, signature)
        for name, value in outputs.items():
            if name in function.structured_outputs and (not request.output_filter or name in request.output_filter):
                _fill_tensor_proto(response.outputs[name], np.asarray(value))
        if self.request_log is not None:
            self.request_log.log(request, response)
        return response

    def _with_fresh_history(self, loaded: LoadedVersion, signature: str, inputs: Dict[str, np.ndarray]):
        """(recommend_by_history, its inputs) answering a recommend(_filtered) request that leaves out what the users
        have seen, when one of them has fresh interactions; else None (the request runs as sent)."""
        if self.fresh is None or signature not in FRESH_SIGNATURES or not bool(inputs[F.EXCLUDE_RATED_INPUT]):
            return None
        by_history = loaded.functions.get(F.RECOMMEND_BY_HISTORY)
        users = inputs[F.USER_ID].reshape(-1)
        rows = self.fresh.rows(users.tolist())
        if by_history is None or not any(rows):
            return None
        width = max(len(row) for row in rows)
        none = np.zeros(0, dtype="S1")
        return by_history, {
            F.USER_ID: users,
            F.HISTORY_ITEMS_INPUT: np.array([list(row) + [b""] * (width - len(row)) for row in rows], dtype=object),
            F.HISTORY_WEIGHTS_INPUT: np.zeros((0, 0), np.float32),  # all 1: the model weighs them fresh_weight
            F.USE_STORED_HISTORY_INPUT: np.array(True),
            F.K_INPUT: inputs[F.K_INPUT],
            F.EXCLUDE_ITEMS_INPUT: inputs.get(F.EXCLUDE_ITEMS_INPUT, none),
            F.ALLOW_ITEMS_INPUT: inputs.get(F.ALLOW_ITEMS_INPUT, none),
        }

    def _call(self, function, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        deadline = batching.DEADLINE.get()
        if deadline is not None and time.monotonic() >= deadline:
            raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, "the request's deadline passed before it ran")
        try:
            if self.batcher is not None and self.batcher.accepts(function):
                try:
                    return self.batcher.run(function, inputs)
                except batching.QueueFull as e:
                    raise RequestError(grpc.StatusCode.UNAVAILABLE, str(e)) from None
                except batching.TooLarge as e:
                    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
                except batching.Expired as e:
                    raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, str(e)) from None
            outputs = function(**{name: tf.constant(value) for name, value in inputs.items()})
            return {name: value.numpy() for name, value in outputs.items()}
        except (tf.errors.InvalidArgumentError, ValueError) as e:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, _tf_error_message(e)) from None

    def _run_examples(self, loaded: LoadedVersion, request, method: str, inputs_key: str):
        """Runs a Regress/Classify request's examples: (signature name, outputs, number of examples)."""
        signature = request.model_spec.signature_name or F.SERVING_DEFAULT
        function = self._examples_signature(loaded, signature, method, inputs_key)
        examples = _serialized_examples(request.input, self.options.row_limit(signature), signature)
        return signature, self._call(function, {inputs_key: examples.numpy()}), len(examples)

    def _examples_signature(self, loaded: LoadedVersion, signature: str, method: str, inputs_key: str):
        function = signature_function(loaded, signature)
        actual = loaded.signature_defs[signature].method_name
        if actual != method:
            kind = "regression" if method == tf.saved_model.REGRESS_METHOD_NAME else "classification"
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Expected {kind} signature method_name to be {method}. Was: {actual}")
        _, specs = function.structured_input_signature
        if list(specs) != [inputs_key] or specs[inputs_key].dtype != tf.string:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f'Signature "{signature}" must take one string input named "{inputs_key}"')
        return function

    def regress(self, request: regression_pb2.RegressionRequest) -> regression_pb2.RegressionResponse:
        return self.regress_on(self.models.resolve(request.model_spec), request)

    def regress_on(self, loaded: LoadedVersion, request) -> regression_pb2.RegressionResponse:
        signature, outputs, count = self._run_examples(loaded, request, tf.saved_model.REGRESS_METHOD_NAME,
                                                       tf.saved_model.REGRESS_INPUTS)
        if tf.saved_model.REGRESS_OUTPUTS not in outputs:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f'Signature "{signature}" has no output named "{tf.saved_model.REGRESS_OUTPUTS}"')
        values = np.asarray(outputs[tf.saved_model.REGRESS_OUTPUTS]).reshape(-1)
        if len(values) != count:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Expected output tensor shape [{count}] or [{count}, 1], "
                               f"got {len(values)} values")
        response = regression_pb2.RegressionResponse()
        _fill_spec(response.model_spec, request.model_spec.name, loaded.version, signature)
        for value in values:
            response.result.regressions.add(value=float(value))
        return response

    def classify(self, request: classification_pb2.ClassificationRequest) -> classification_pb2.ClassificationResponse:
        return self.classify_on(self.models.resolve(request.model_spec), request)

    def classify_on(self, loaded: LoadedVersion, request) -> classification_pb2.ClassificationResponse:
        signature, outputs, _ = self._run_examples(loaded, request, tf.saved_model.CLASSIFY_METHOD_NAME,
                                                   tf.saved_model.CLASSIFY_INPUTS)
        classes = outputs.get(tf.saved_model.CLASSIFY_OUTPUT_CLASSES)
        scores = outputs.get(tf.saved_model.CLASSIFY_OUTPUT_SCORES)
        if classes is None and scores is None:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "Expected classification signature outputs "
                               f"{tf.saved_model.CLASSIFY_OUTPUT_CLASSES} and/or {tf.saved_model.CLASSIFY_OUTPUT_SCORES}")
        shape = (classes if classes is not None else scores).shape
        response = classification_pb2.ClassificationResponse()
        _fill_spec(response.model_spec, request.model_spec.name, loaded.version, signature)
        for row in range(shape[0]):
            classification = response.result.classifications.add()
            for col in range(shape[1] if len(shape) > 1 else 1):
                label = classes[row][col] if classes is not None else b""
                score = float(scores[row][col]) if scores is not None else 0.0
                classification.classes.add(label=label.decode() if isinstance(label, bytes) else str(label),
                                           score=score)
        return response

    def multi_inference(self, request: inference_pb2.MultiInferenceRequest) -> inference_pb2.MultiInferenceResponse:
        """Several regress/classify tasks on one model version over the same examples (TF Serving's rules)."""
        if not request.tasks:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "MultiInferenceRequest must have at least one task")
        names = {task.model_spec.name for task in request.tasks}
        if len(names) > 1:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               "All ModelSpecs in a MultiInferenceRequest must access the same model name")
        signatures = [task.model_spec.signature_name or F.SERVING_DEFAULT for task in request.tasks]
        if len(set(signatures)) != len(signatures):
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "Duplicate evaluation of signature: "
                               + next(s for s in signatures if signatures.count(s) > 1))
        loaded = self.models.resolve(request.tasks[0].model_spec)
        response = inference_pb2.MultiInferenceResponse()
        for task in request.tasks:
            result = response.results.add()
            if task.method_name == tf.saved_model.REGRESS_METHOD_NAME:
                sub = regression_pb2.RegressionRequest(model_spec=task.model_spec, input=request.input)
                answer = self.regress_on(loaded, sub)
                result.regression_result.CopyFrom(answer.result)
            elif task.method_name == tf.saved_model.CLASSIFY_METHOD_NAME:
                sub = classification_pb2.ClassificationRequest(model_spec=task.model_spec, input=request.input)
                answer = self.classify_on(loaded, sub)
                result.classification_result.CopyFrom(answer.result)
            else:
                raise RequestError(grpc.StatusCode.UNIMPLEMENTED,
                                   f"Unsupported signature method_name: {task.method_name}")
            result.model_spec.CopyFrom(answer.model_spec)
        return response

    def metadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest):
        unsupported = [f for f in request.metadata_field if f != SIGNATURE_DEF_FIELD]
        if not request.metadata_field or unsupported:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Metadata field {', '.join(unsupported) or '(none)'} is not supported; "
                               f"use {SIGNATURE_DEF_FIELD}")
        loaded = self.models.resolve(request.model_spec)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature_def in loaded.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(signature_def)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        _fill_spec(response.model_spec, request.model_spec.name, loaded.version)
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
        return response

    # --- ModelService --------------------------------------------------------------------------------

    def reload(self, request: model_management_pb2.ReloadConfigRequest) -> model_management_pb2.ReloadConfigResponse:
        """Applies a whole new ModelServerConfig, or refuses it and keeps the current one fully in place.

        Refused: anything but a model_config_list, an empty list (it would unload everything), and a
        base_path outside the model roots (a config pointing a model at /etc).
        """
        if request.config.WhichOneof("config") != "model_config_list":
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "only model_config_list configs are supported")
        for model in request.config.model_config_list.config:
            if not under_roots(model.base_path, self.model_roots):
                raise RequestError(grpc.StatusCode.PERMISSION_DENIED,
                                   f"model {model.name}: base_path {model.base_path!r} is outside the allowed "
                                   f"model roots ({', '.join(self.model_roots) or 'none'}; see --model-root)")
        self.models.apply(request.config)
        log.info("model config reloaded: %s", ", ".join(
            f"{m.name} {dict(m.version_labels) or ''}".strip() for m in request.config.model_config_list.config))
        return model_management_pb2.ReloadConfigResponse(status=status_pb2.StatusProto(error_code=0))

    def status(self, request: get_model_status_pb2.GetModelStatusRequest):
        """As TF Serving: AVAILABLE versions, the one LOADING, and versions that failed (END, with the error)."""
        name = request.model_spec.name
        store = self.models.store(name)
        states = store.states()
        if request.model_spec.version_label:
            wanted = store.get(label=request.model_spec.version_label).version
            states = [s for s in states if s.version == wanted]
        if request.model_spec.HasField("version"):
            wanted = request.model_spec.version.value
            states = [s for s in states if s.version == wanted]
            if not states:
                raise RequestError(grpc.StatusCode.NOT_FOUND, f"Could not find version {wanted} of model {name}")
        if not states:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}")
        response = get_model_status_pb2.GetModelStatusResponse()
        for state in states:
            response.model_version_status.add(
                version=state.version, state=state.state,
                status=status_pb2.StatusProto(error_code=grpc.StatusCode.UNKNOWN.value[0] if state.error else 0,
                                              error_message=state.error))
        return response

    # --- Warm-up ---------------------------------------------------------------------------------------

    def warm_up(self, loaded: LoadedVersion) -> int:
        """Replays the version's assets.extra/tf_serving_warmup_requests before it serves (as TF Serving).

        A record that fails makes the load fail: the version is skipped and the old one keeps serving.
        """
        path = f"{loaded.path}/{F.WARMUP_REQUESTS_FILE}"
        if not tf.io.gfile.exists(path):
            return 0
        count = 0
        for record in tf.data.TFRecordDataset(path).take(MAX_WARMUP_RECORDS).as_numpy_iterator():
            entry = prediction_log_pb2.PredictionLog.FromString(record)
            kind = entry.WhichOneof("log_type")
            try:
                if kind == "predict_log":
                    self.predict_on(loaded, entry.predict_log.request)
                elif kind == "regress_log":
                    self.regress_on(loaded, entry.regress_log.request)
                elif kind == "classify_log":
                    self.classify_on(loaded, entry.classify_log.request)
                else:
                    raise RequestError(grpc.StatusCode.UNIMPLEMENTED, f"unsupported warm-up log type {kind}")
            except RequestError as e:
                raise ValueError(f"warm-up request {count + 1} in {path} failed: {e.code.name}: {e}") from None
            count += 1
        return count


_CODES = {VersionNotFound: grpc.StatusCode.NOT_FOUND, LabelError: grpc.StatusCode.FAILED_PRECONDITION,
          ConfigError: grpc.StatusCode.INVALID_ARGUMENT, limits.LimitError: grpc.StatusCode.INVALID_ARGUMENT}
_CODES.update({cls: grpc.StatusCode.NOT_FOUND for cls in VersionNotFound.__subclasses__()})


# Metadata requests are how clients ask what is served (RecsysClient asks whether the `stable` label exists, as no
# TF Serving API lists labels): NOT_FOUND there is an answer, logged at DEBUG, not a failure worth a WARNING.
LOOKUPS = frozenset({"GetModelMetadata", "metadata"})


def answer(api: str, spec, call: Callable, metrics=None):
    """Runs one request; returns (response, None) or (None, RequestError). Logs refusals, records metrics.

    Shared by the gRPC and REST front ends so both log and count alike; never raises.
    """
    started = time.monotonic()
    response, error = None, None
    try:
        response = call()
    except (RequestError, VersionNotFound, LabelError, ConfigError, limits.LimitError) as e:
        # A new exception, never raised: the caught one's traceback holds this frame, and through `call`
        # the parsed request, in a cycle only the garbage collector would break (~18x the request's size).
        error = RequestError(e.code if isinstance(e, RequestError) else _CODES[type(e)], str(e))
        quiet = api in LOOKUPS and error.code == grpc.StatusCode.NOT_FOUND
        log.log(logging.DEBUG if quiet else logging.WARNING, "%s: %s: %s", api, error.code.name, error)
    except Exception as e:  # never crash the server on a request
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        error = RequestError(grpc.StatusCode.INTERNAL, message)
        log.error("%s: INTERNAL: %s", api, message)
    if metrics is not None:
        answered = getattr(response, "model_spec", None) or spec  # the request's spec when no proto answered
        version = str(answered.version.value) if answered is not None and answered.HasField("version") else ""
        signature = getattr(answered, "signature_name", "")
        metrics.observe(api, getattr(spec, "name", ""), version, signature,
                        error.code.name if error else "OK", time.monotonic() - started)
    return response, error
