"""The server through TensorFlow Serving's official stubs on loopback, over small real SavedModels."""

import os
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from components import features as F
from serving.client import RecsysClient, ServingError
from serving.server import build_server

CATALOGUE = ["a", "bb", "ccc"]


class TinyRecommender(tf.Module):
    """rating = offset + len(user_id) + len(item_id): exact values the tests can assert."""

    def __init__(self, offset: float):
        super().__init__()
        self.offset = tf.Variable(offset)
        self.items = tf.constant(CATALOGUE)

    def _rate(self, users, items):
        return self.offset + tf.cast(tf.strings.length(users) + tf.strings.length(items), tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=F.USER_ID),
                                  tf.TensorSpec([None], tf.string, name=F.ITEM_ID)])
    def predict(self, user_id, item_id):
        return {F.RATING_OUTPUT: self._rate(user_id, item_id)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=F.USER_ID),
                                  tf.TensorSpec([], tf.int32, name=F.K_INPUT),
                                  tf.TensorSpec([], tf.bool, name=F.EXCLUDE_RATED_INPUT)])
    def recommend(self, user_id, k, exclude_rated):
        """Every user "rated" the longest item, ccc: excluding rated items drops it."""
        n = tf.shape(self.items)[0]
        users = tf.repeat(user_id, n)
        items = tf.tile(self.items, [tf.shape(user_id)[0]])
        scores = tf.reshape(self._rate(users, items), [-1, n])
        scores = tf.where(exclude_rated & tf.equal(self.items, "ccc")[None, :], float("-inf"), scores)
        top = tf.math.top_k(scores, k)
        ids = tf.gather(self.items, top.indices)
        return {F.ITEMS_OUTPUT: ids, F.TITLES_OUTPUT: tf.strings.upper(ids), F.SCORES_OUTPUT: top.values}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=F.EXAMPLES_INPUT)])
    def serve_examples(self, examples):
        spec = {F.USER_ID: tf.io.FixedLenFeature([], tf.string), F.ITEM_ID: tf.io.FixedLenFeature([], tf.string)}
        parsed = tf.io.parse_example(examples, spec)
        return {F.RATING_OUTPUT: self._rate(parsed[F.USER_ID], parsed[F.ITEM_ID])}


def save_version(base, version, offset):
    module = TinyRecommender(offset)
    tf.saved_model.save(module, os.path.join(base, str(version)), signatures={
        F.SERVING_DEFAULT: module.serve_examples, F.PREDICT: module.predict, F.RECOMMEND: module.recommend})


@pytest.fixture(scope="module")
def base_path(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("models") / "recsys")
    save_version(base, 1, 0.0)
    return base


@pytest.fixture(scope="module")
def server(base_path):
    srv, port, store = build_server(F.DEFAULT_MODEL_NAME, base_path, port=0, host="127.0.0.1", poll_interval=0.2)
    yield f"127.0.0.1:{port}", store
    srv.stop(0)
    store.stop()


@pytest.fixture(scope="module")
def stubs(server):
    channel = grpc.insecure_channel(server[0])
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel), model_service_pb2_grpc.ModelServiceStub(channel)
    channel.close()


def _request(signature, model=F.DEFAULT_MODEL_NAME, **inputs):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    if signature:
        request.model_spec.signature_name = signature
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(value)
    return request


def _strings(values):
    return tf.make_tensor_proto(values, dtype=tf.string)


def test_predict_signature_answers_with_the_models_values(stubs):
    response = stubs[0].Predict(_request(F.PREDICT, user_id=_strings(["u1", "user"]), item_id=_strings(["i", "it"])),
                                timeout=10)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs[F.RATING_OUTPUT]), [3.0, 6.0])
    assert response.model_spec.version.value == 1 and response.model_spec.signature_name == F.PREDICT


def test_recommend_returns_ranked_items(stubs):
    response = stubs[0].Predict(_request(F.RECOMMEND, user_id=_strings(["u"]), k=tf.make_tensor_proto(2, dtype=tf.int32),
                                         exclude_rated=tf.make_tensor_proto(False)), timeout=10)
    assert tf.make_ndarray(response.outputs[F.ITEMS_OUTPUT]).tolist() == [[b"ccc", b"bb"]]
    assert tf.make_ndarray(response.outputs[F.TITLES_OUTPUT]).tolist() == [[b"CCC", b"BB"]]
    np.testing.assert_allclose(tf.make_ndarray(response.outputs[F.SCORES_OUTPUT]), [[4.0, 3.0]])


def test_default_signature_takes_serialized_examples(stubs):
    example = tf.train.Example(features=tf.train.Features(feature={
        F.USER_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"ab"])),
        F.ITEM_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"xyz"]))}))
    response = stubs[0].Predict(_request("", examples=_strings([example.SerializeToString()])), timeout=10)
    assert response.model_spec.signature_name == F.SERVING_DEFAULT
    np.testing.assert_allclose(tf.make_ndarray(response.outputs[F.RATING_OUTPUT]), [5.0])


def test_output_filter_limits_outputs(stubs):
    request = _request(F.RECOMMEND, user_id=_strings(["u"]), k=tf.make_tensor_proto(1, dtype=tf.int32),
                       exclude_rated=tf.make_tensor_proto(False))
    request.output_filter.append(F.SCORES_OUTPUT)
    assert set(stubs[0].Predict(request, timeout=10).outputs) == {F.SCORES_OUTPUT}


def test_metadata_lists_signatures_with_their_inputs(stubs):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = F.DEFAULT_MODEL_NAME
    response = stubs[0].GetModelMetadata(request, timeout=10)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    assert set(signatures.signature_def) == {F.SERVING_DEFAULT, F.PREDICT, F.RECOMMEND}
    assert set(signatures.signature_def[F.RECOMMEND].inputs) == {F.USER_ID, F.K_INPUT, F.EXCLUDE_RATED_INPUT}
    assert set(signatures.signature_def[F.RECOMMEND].outputs) == {F.ITEMS_OUTPUT, F.TITLES_OUTPUT, F.SCORES_OUTPUT}
    assert response.model_spec.version.value == 1


def test_status_reports_the_loaded_version_available(stubs):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = F.DEFAULT_MODEL_NAME
    statuses = stubs[1].GetModelStatus(request, timeout=10).model_version_status
    assert [(s.version, s.state, s.status.error_code) for s in statuses] == [
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0)]


@pytest.mark.parametrize("request_, code, message", [
    (lambda: _request(F.PREDICT, model="nope", user_id=_strings(["u"]), item_id=_strings(["i"])),
     grpc.StatusCode.NOT_FOUND, "nope"),
    (lambda: _request("nope", user_id=_strings(["u"])), grpc.StatusCode.FAILED_PRECONDITION, '"nope" not found'),
    (lambda: _request(F.PREDICT, user_id=_strings(["u"])), grpc.StatusCode.INVALID_ARGUMENT, "missing input(s): item_id"),
    (lambda: _request(F.PREDICT, user_id=_strings(["u"]), item_id=_strings(["i"]), extra=_strings(["x"])),
     grpc.StatusCode.INVALID_ARGUMENT, "unexpected input(s): extra"),
    (lambda: _request(F.PREDICT, user_id=tf.make_tensor_proto([1.0]), item_id=_strings(["i"])),
     grpc.StatusCode.INVALID_ARGUMENT, "arg[user_id]"),
    (lambda: _request(F.RECOMMEND, user_id=_strings(["u"]), k=tf.make_tensor_proto([2], dtype=tf.int32),
                      exclude_rated=tf.make_tensor_proto(False)),
     grpc.StatusCode.INVALID_ARGUMENT, "input k: shape"),
])
def test_bad_requests_get_tf_serving_status_codes(stubs, request_, code, message):
    with pytest.raises(grpc.RpcError) as raised:
        stubs[0].Predict(request_(), timeout=10)
    assert raised.value.code() == code and message in raised.value.details(), raised.value.details()
    # The server is still up and answering.
    ok = stubs[0].Predict(_request(F.PREDICT, user_id=_strings(["u"]), item_id=_strings(["i"])), timeout=10)
    assert ok.outputs[F.RATING_OUTPUT].float_val


def test_typed_client_round_trips(server):
    with RecsysClient(server[0], timeout=10) as client:
        assert client.wait_until_ready(5) == 1
        assert client.predict("ab", "c") == pytest.approx(3.0)
        recs = client.recommend("u", k=3, exclude_rated=False)
        assert [(r.item_id, r.title, r.score) for r in recs] == [("ccc", "CCC", 4.0), ("bb", "BB", 3.0), ("a", "A", 2.0)]
        assert [r.item_id for r in client.recommend("u", k=2)] == ["bb", "a"]
        assert set(client.metadata().signature_def) == {F.SERVING_DEFAULT, F.PREDICT, F.RECOMMEND}


def test_client_errors_are_one_line(server):
    with RecsysClient(server[0], model_name="nope", timeout=5) as client:
        with pytest.raises(ServingError, match="NOT_FOUND"):
            client.predict("u", "i")


def test_new_versions_are_swapped_in_and_broken_ones_skipped(server, base_path):
    """Runs last in this module: it changes what the shared server serves."""
    target, store = server
    os.makedirs(os.path.join(base_path, "7"))  # a push in progress: no saved_model.pb yet
    broken = os.path.join(base_path, "8")
    os.makedirs(broken)
    with open(os.path.join(broken, "saved_model.pb"), "wb") as f:
        f.write(b"not a protobuf")
    time.sleep(1.0)
    with RecsysClient(target, timeout=10) as client:
        assert store.versions() == [1] and client.predict("u", "i") == pytest.approx(2.0)
        save_version(base_path, 9, 10.0)
        deadline = time.monotonic() + 20
        while store.versions() != [9] and time.monotonic() < deadline:
            assert client.predict("u", "i") in (pytest.approx(2.0), pytest.approx(12.0))  # never fails mid-swap
            time.sleep(0.05)
        assert store.versions() == [9]
        assert client.predict("u", "i") == pytest.approx(12.0)
        assert [s.version for s in client.status().model_version_status] == [9]
