"""A small typed client over TensorFlow Serving's official gRPC stubs.

It works against real TF Serving and against `recsys serve` alike; gRPC failures become one
`ServingError` whose message says what failed and where. It speaks TLS when given credentials
(`channel_credentials`), and asks for the `stable` label by default when the server has one, so an
unlabelled newest version never answers it by accident.
"""

from __future__ import annotations

import dataclasses
import time
from typing import List, Mapping, Optional, Sequence, Tuple

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from components import features as F
from serving.limits import MAX_HISTORY_ITEMS


# A server that is still starting is noticed within a second, not after gRPC's default backoff (up to 120 s).
_CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 200), ("grpc.max_reconnect_backoff_ms", 1000)]


STABLE = "stable"


class ServingError(RuntimeError):
    """A failed call, described in one line."""


def channel_credentials(ca: Optional[str] = None, cert: Optional[str] = None,
                        key: Optional[str] = None) -> Optional[grpc.ChannelCredentials]:
    """TLS credentials from PEM files (CA to trust; client certificate and key), or None for plaintext."""
    if not (ca or cert or key):
        return None
    if bool(cert) != bool(key):
        raise ServingError("a client certificate needs its key: give both --tls-cert and --tls-key")

    def read(path):
        if not path:
            return None
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as e:
            raise ServingError(f"cannot read {path}: {e.strerror}") from None

    return grpc.ssl_channel_credentials(read(ca), read(key), read(cert))


@dataclasses.dataclass(frozen=True)
class Recommendation:
    item_id: str
    title: str
    score: float


@dataclasses.dataclass(frozen=True)
class HistoryRecommendations:
    """What `recommend_by_history` answers for one history."""

    items: List[Recommendation]
    unknown_items: int  # ids in the history the catalogue does not have: ignored
    history_length: int  # distinct catalogue items the answer was scored from (stored history included)
    popularity_fallback: bool  # no known item and no attributes: the most popular items


class RecsysClient:
    def __init__(self, target: str = "localhost:8500", model_name: str = F.DEFAULT_MODEL_NAME,
                 timeout: float = 10.0, label: Optional[str] = None,
                 credentials: Optional[grpc.ChannelCredentials] = None):
        """`label`: the version label to ask for; None means `stable` when the server has that label,
        else the server's default (its newest served version); "" always means the server's default."""
        self.target, self.model_name, self.timeout = target, model_name, timeout
        self._label = label
        self._channel = (grpc.secure_channel(target, credentials, options=_CHANNEL_OPTIONS) if credentials
                         else grpc.insecure_channel(target, options=_CHANNEL_OPTIONS))
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, method, request, what: str, timeout: Optional[float] = None):
        timeout = self.timeout if timeout is None else timeout
        try:
            return method(request, timeout=timeout)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNAVAILABLE:
                raise ServingError(f"no server answering at {self.target} ({what})") from None
            if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise ServingError(f"{what} on {self.target}: no answer within {timeout:g} s") from None
            raise ServingError(f"{what} on {self.target} failed: {e.code().name}: {e.details()}") from None

    def status(self, timeout: Optional[float] = None) -> get_model_status_pb2.GetModelStatusResponse:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = self.model_name
        return self._call(self._models.GetModelStatus, request, f"status of model '{self.model_name}'", timeout)

    def metadata(self) -> get_model_metadata_pb2.SignatureDefMap:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = self.model_name
        response = self._call(self._predictions.GetModelMetadata, request, f"metadata of model '{self.model_name}'")
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return signature_map

    def wait_until_ready(self, timeout_s: float) -> int:
        """Blocks until the model has an AVAILABLE version and returns it (a server may load for a while)."""
        deadline, last_error = time.monotonic() + timeout_s, "no answer"
        while time.monotonic() < deadline:
            try:
                remaining = max(0.1, deadline - time.monotonic())
                for status in self.status(timeout=min(self.timeout, remaining)).model_version_status:
                    if status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE:
                        return status.version
            except ServingError as e:
                last_error = str(e)
            time.sleep(0.5)
        raise ServingError(f"model '{self.model_name}' not ready at {self.target} after {timeout_s:g} s: {last_error}")

    def label(self, what: str = "status") -> str:
        """The label requests carry ("" for none), asking the server once whether it has `stable`.

        Asked through GetModelMetadata, which resolves labels on TF Serving as on ours (TF Serving's
        GetModelStatus ignores version_label); an unknown label is NOT_FOUND here, INVALID_ARGUMENT there.
        Our server logs that miss at DEBUG (inference.LOOKUPS), so the question leaves no WARNING behind.
        """
        if self._label is None:
            request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
            request.model_spec.name, request.model_spec.version_label = self.model_name, STABLE
            try:
                self._predictions.GetModelMetadata(request, timeout=self.timeout)
                self._label = STABLE
            except grpc.RpcError as e:
                if e.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                    self._call(self._predictions.GetModelMetadata, request, what)  # unreachable etc.: one line
                self._label = ""
        return self._label

    def _predict(self, signature: str, inputs: dict) -> dict:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model_name
        request.model_spec.signature_name = signature
        what = f"{signature} on model '{self.model_name}'"
        request.model_spec.version_label = self.label(what)
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(value)
        response = self._call(self._predictions.Predict, request, what)
        return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}

    def predict_output(self, pairs: Sequence[Tuple[str, str]]) -> Tuple[str, List[float]]:
        """("rating", values) from a rating model, ("score", values) from a ranking model."""
        users, items = zip(*pairs) if pairs else ((), ())
        out = self._predict(F.PREDICT, {
            F.USER_ID: tf.make_tensor_proto(list(users), dtype=tf.string),
            F.ITEM_ID: tf.make_tensor_proto(list(items), dtype=tf.string),
        })
        key = F.RATING_OUTPUT if F.RATING_OUTPUT in out else F.SCORE_OUTPUT
        return key, [float(x) for x in out[key].reshape(-1)]

    def predict_many(self, pairs: Sequence[Tuple[str, str]]) -> List[float]:
        return self.predict_output(pairs)[1]

    def predict(self, user_id: str, item_id: str) -> float:
        return self.predict_many([(user_id, item_id)])[0]

    def recommend(self, user_id: str, k: int = 10, exclude_rated: bool = True, exclude: Sequence[str] = (),
                  allow: Sequence[str] = (), recent_item_ids: Optional[Sequence[str]] = None) -> List[Recommendation]:
        """Top-k items; by default without the items the user already has. `exclude` drops these item ids,
        a non-empty `allow` ranks only those (`recommend_filtered`; plain `recommend` without lists).

        `recent_item_ids` (oldest first): items the user interacted with since the pipeline's run; they are
        added to the user's stored history for this request and left out of the answer
        (`recommend_by_history` with use_stored_history; `recommend_by_history()` also returns its counts).
        """
        if recent_item_ids is not None:
            if not exclude_rated:
                raise ValueError("recent_item_ids always leaves out the user's items: exclude_rated=False "
                                 "cannot be combined with it")
            return self.recommend_by_history(recent_item_ids, k=k, user_id=user_id, use_stored_history=True,
                                             exclude=exclude, allow=allow).items
        inputs = {
            F.USER_ID: tf.make_tensor_proto([user_id], dtype=tf.string),
            F.K_INPUT: tf.make_tensor_proto(k, dtype=tf.int32),
            F.EXCLUDE_RATED_INPUT: tf.make_tensor_proto(exclude_rated, dtype=tf.bool),
        }
        signature = F.RECOMMEND
        if exclude or allow:
            signature = F.RECOMMEND_FILTERED
            inputs[F.EXCLUDE_ITEMS_INPUT] = tf.make_tensor_proto(list(exclude), dtype=tf.string)
            inputs[F.ALLOW_ITEMS_INPUT] = tf.make_tensor_proto(list(allow), dtype=tf.string)
        return _ranked(self._predict(signature, inputs))

    def recommend_by_features(self, user_id: str, features: Mapping[str, object], k: int = 10) -> List[Recommendation]:
        """Top-k for a user described by attributes (`recommend_by_features`): a user the model never saw is
        ranked by them (cold start). Numbers are sent as floats, strings as strings, lists as several strings."""
        example = tf.train.Example()
        example.features.feature[F.USER_ID].bytes_list.value.append(user_id.encode("utf-8"))
        for name, value in features.items():
            feature = example.features.feature[name]
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                feature.float_list.value.append(float(value))
            elif isinstance(value, (list, tuple)):
                feature.bytes_list.value.extend(str(v).encode("utf-8") for v in value)
            else:
                feature.bytes_list.value.append(str(value).encode("utf-8"))
        return _ranked(self._predict(F.RECOMMEND_BY_FEATURES, {
            F.EXAMPLES_INPUT: tf.make_tensor_proto([example.SerializeToString()], dtype=tf.string),
            F.K_INPUT: tf.make_tensor_proto(k, dtype=tf.int32)}))

    def recommend_by_history(self, history: Sequence[str], k: int = 10, user_id: str = "",
                             weights: Optional[Sequence[float]] = None, use_stored_history: bool = True,
                             exclude: Sequence[str] = (), allow: Sequence[str] = ()) -> HistoryRecommendations:
        """Top-k scored from `history` (item ids, oldest first), which is left out of the answer.

        `user_id` "" (or one the model never saw) is an anonymous session; for a known user and
        `use_stored_history`, everything the pipeline saw of that user is scored from and left out too.
        `weights`: one per history item (default 1.0 each). Ids the catalogue lacks are ignored and counted;
        a history longer than MAX_HISTORY_ITEMS is cut to its newest (last) MAX_HISTORY_ITEMS items.
        `exclude` drops item ids, a non-empty `allow` ranks only those.
        """
        history = [str(i) for i in history]
        if weights is not None:
            weights = [float(w) for w in weights]
            if len(weights) != len(history):
                raise ValueError(f"{len(weights)} weights for {len(history)} history items: give one per item")
            weights = weights[-MAX_HISTORY_ITEMS:]
        history = history[-MAX_HISTORY_ITEMS:]
        # One row of L items; no weights is an empty [1, 0] tensor (one row, so batching servers can batch it).
        out = self._predict(F.RECOMMEND_BY_HISTORY, {
            F.USER_ID: tf.make_tensor_proto([user_id], dtype=tf.string),
            F.HISTORY_ITEMS_INPUT: tf.make_tensor_proto(history, dtype=tf.string, shape=[1, len(history)]),
            F.HISTORY_WEIGHTS_INPUT: tf.make_tensor_proto(weights or [], dtype=tf.float32,
                                                          shape=[1, len(weights) if weights else 0]),
            F.USE_STORED_HISTORY_INPUT: tf.make_tensor_proto(use_stored_history, dtype=tf.bool),
            F.K_INPUT: tf.make_tensor_proto(k, dtype=tf.int32),
            F.EXCLUDE_ITEMS_INPUT: tf.make_tensor_proto(list(exclude), dtype=tf.string),
            F.ALLOW_ITEMS_INPUT: tf.make_tensor_proto(list(allow), dtype=tf.string)})
        return HistoryRecommendations(_ranked(out), int(out[F.UNKNOWN_ITEMS_OUTPUT][0]),
                                      int(out[F.HISTORY_LENGTH_OUTPUT][0]), bool(out[F.FALLBACK_OUTPUT][0]))

    def similar_items(self, item_id: str, k: int = 10) -> List[Recommendation]:
        """The k items most like `item_id` ("more like this"), the item itself left out."""
        return _ranked(self._predict(F.SIMILAR_ITEMS, {F.ITEM_ID: tf.make_tensor_proto([item_id], dtype=tf.string),
                                                        F.K_INPUT: tf.make_tensor_proto(k, dtype=tf.int32)}))


def _ranked(out: dict) -> List[Recommendation]:
    """The first row of a top-k response; slots left without a candidate (empty id) are dropped."""
    return [
        Recommendation(item.decode("utf-8"), title.decode("utf-8"), float(score))
        for item, title, score in zip(out[F.ITEMS_OUTPUT][0], out[F.TITLES_OUTPUT][0], out[F.SCORES_OUTPUT][0])
        if item
    ]
