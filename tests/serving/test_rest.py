"""TF Serving's REST API: same answers as gRPC for the same inputs, same error shape, metrics.

Conformance tests: they run against any server when SERVING_TARGET/SERVING_REST are set (conftest.py).
"""

import base64
import json
import re
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from components import features as F
from tests.serving.tiny_model import CLASSIFY

MODEL = f"/v1/models/{F.DEFAULT_MODEL_NAME}"


@pytest.fixture(scope="module")
def rest(target):
    if not target.rest:
        pytest.skip("no REST address (set SERVING_REST)")
    return target.rest


def call(rest, path, body=None):
    """(HTTP status, parsed JSON) of a GET (body None) or POST."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(rest + path, data=data, method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_model_status_has_tf_servings_shape(rest):
    for path in (MODEL, f"{MODEL}/versions/1"):
        assert call(rest, path) == (200, {"model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]})


def test_metadata_lists_the_signatures(rest):
    status, body = call(rest, f"{MODEL}/metadata")
    assert status == 200 and body["model_spec"]["version"] == "1"
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert {F.PREDICT, F.RECOMMEND, F.REGRESS} <= set(signatures)
    assert set(signatures[F.RECOMMEND]["inputs"]) == {F.USER_ID, F.K_INPUT, F.EXCLUDE_RATED_INPUT}


def test_predict_row_and_columnar_formats_match_grpc(rest, target):
    users, items = ["u1", "user"], ["i", "it"]
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = F.DEFAULT_MODEL_NAME, F.PREDICT
    request.inputs[F.USER_ID].CopyFrom(tf.make_tensor_proto(users))
    request.inputs[F.ITEM_ID].CopyFrom(tf.make_tensor_proto(items))
    with grpc.insecure_channel(target.grpc) as channel:
        expected = tf.make_ndarray(prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            request, timeout=10).outputs[F.RATING_OUTPUT]).tolist()
    rows = {"signature_name": F.PREDICT, "instances": [{F.USER_ID: u, F.ITEM_ID: i} for u, i in zip(users, items)]}
    columns = {"signature_name": F.PREDICT, "inputs": {F.USER_ID: users, F.ITEM_ID: items}}
    assert call(rest, f"{MODEL}:predict", rows) == (200, {"predictions": expected})
    assert call(rest, f"{MODEL}/versions/1:predict", columns) == (200, {"outputs": expected})
    assert expected == [3.0, 6.0]


def test_recommend_in_columnar_format(rest):
    body = {"signature_name": F.RECOMMEND, "inputs": {F.USER_ID: ["u"], F.K_INPUT: 2, F.EXCLUDE_RATED_INPUT: False}}
    status, answer = call(rest, f"{MODEL}:predict", body)
    assert status == 200 and answer["outputs"] == {
        F.ITEMS_OUTPUT: [["ccc", "bb"]], F.TITLES_OUTPUT: [["CCC", "BB"]], F.SCORES_OUTPUT: [[4.0, 3.0]]}


def test_single_input_signature_takes_bare_b64_instances(rest):
    example = tf.train.Example()
    example.features.feature[F.USER_ID].bytes_list.value.append(b"ab")
    example.features.feature[F.ITEM_ID].bytes_list.value.append(b"xyz")
    encoded = {"b64": base64.b64encode(example.SerializeToString()).decode()}
    assert call(rest, f"{MODEL}:predict", {"instances": [encoded, encoded]}) == (200, {"predictions": [5.0, 5.0]})


def test_regress_and_classify(rest):
    examples = [{F.USER_ID: "ab", F.ITEM_ID: "xyz"}, {F.USER_ID: "a", F.ITEM_ID: "b"}]
    assert call(rest, f"{MODEL}:regress", {"signature_name": F.REGRESS, "examples": examples}) == (
        200, {"results": [5.0, 2.0]})
    with_context = {"signature_name": F.REGRESS, "context": {F.USER_ID: "uuu"}, "examples": [{F.ITEM_ID: "a"}]}
    assert call(rest, f"{MODEL}:regress", with_context) == (200, {"results": [4.0]})
    status, body = call(rest, f"{MODEL}:classify", {"signature_name": CLASSIFY, "examples": examples[1:]})
    assert status == 200 and [[c[0], round(c[1], 3)] for c in body["results"][0]] == [["low", 0.8], ["high", 0.2]]


@pytest.mark.parametrize("method, path, body, status, message", [
    ("GET", "/v1/models/nope", None, 404, "nope"),
    ("GET", f"{MODEL}/versions/42", None, 404, "42"),
    ("GET", f"{MODEL}/labels/nope", None, 404, "nope"),
    ("POST", "/v1/models/nope:predict", {"instances": [1]}, 404, "nope"),
    ("POST", f"{MODEL}:predict", {"signature_name": "nope", "instances": [1]}, 412, "nope"),
    ("POST", f"{MODEL}:predict", b"{not json", 400, "JSON"),
    ("POST", f"{MODEL}:predict", {"signature_name": F.PREDICT, "instances": [{F.USER_ID: "u"}]}, 400, F.ITEM_ID),
    ("POST", f"{MODEL}:predict", {"signature_name": F.PREDICT, "inputs": {F.USER_ID: [1], F.ITEM_ID: ["i"]}}, 400,
     F.USER_ID),
    ("POST", f"{MODEL}:predict", {"signature_name": F.RECOMMEND,
                                  "instances": [{F.USER_ID: "u", F.K_INPUT: 2, F.EXCLUDE_RATED_INPUT: False}]},
     400, F.K_INPUT),
    ("POST", f"{MODEL}:regress", {"examples": [{F.USER_ID: "u"}]}, 400, "method_name"),
    ("POST", f"{MODEL}:predict", {"signature_name": F.PREDICT}, 400, "instances"),
])
def test_errors_have_tf_servings_status_and_body(rest, method, path, body, status, message):
    got_status, got = call(rest, path, body if method == "POST" else None)
    assert got_status == status and set(got) == {"error"} and message in got["error"], got


def test_prometheus_metrics_count_requests_by_model_signature_and_status(rest, target):
    if target.embedded is None:
        pytest.skip("an external server's counts include other clients")
    call(rest, f"{MODEL}:predict", {"signature_name": F.PREDICT, "inputs": {F.USER_ID: ["u"], F.ITEM_ID: ["i"]}})
    call(rest, f"{MODEL}:predict", {"signature_name": F.PREDICT, "inputs": {F.USER_ID: ["u"]}})
    with urllib.request.urlopen(rest + "/monitoring/prometheus/metrics", timeout=10) as response:
        text = response.read().decode()

    def count(**labels):
        pattern = r":tensorflow:serving:request_count_total\{([^}]*)\} ([0-9.e+]+)"
        return sum(float(value) for found, value in re.findall(pattern, text)
                   if all(f'{k}="{v}"' in found for k, v in labels.items()))

    assert count(model_name=F.DEFAULT_MODEL_NAME, signature_name=F.PREDICT, API="predict", status="OK",
                 model_version="1") >= 1
    assert count(model_name=F.DEFAULT_MODEL_NAME, API="predict", status="INVALID_ARGUMENT") >= 1
    assert ":tensorflow:serving:request_latency_bucket{" in text
    np.testing.assert_array_less(0, count(API="status"))  # the status GETs of earlier tests
