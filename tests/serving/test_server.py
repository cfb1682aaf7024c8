"""The server through TensorFlow Serving's official stubs on loopback, over small real SavedModels.

Conformance tests: they run against any server when SERVING_TARGET is set (see conftest.py).
"""

import os
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from components import features as F
from serving.client import RecsysClient, ServingError
from serving.options import ServerOptions
from serving.server import build_server
from tests.serving.conftest import EXTERNAL
from tests.serving.tiny_model import CLASSIFY, save_version


@pytest.fixture(scope="module")
def stubs(target):
    channel = grpc.insecure_channel(target.grpc)
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
    if not EXTERNAL:  # numbers travel as one packed buffer, not element by element
        assert response.outputs[F.SCORES_OUTPUT].tensor_content and not response.outputs[F.SCORES_OUTPUT].float_val


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
    assert set(signatures.signature_def) == {F.SERVING_DEFAULT, F.PREDICT, F.RECOMMEND, F.RECOMMEND_BY_HISTORY,
                                             F.REGRESS, CLASSIFY}
    assert signatures.signature_def[F.REGRESS].method_name == tf.saved_model.REGRESS_METHOD_NAME
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
    (lambda: _request(F.PREDICT, user_id=tensor_pb2.TensorProto(), item_id=_strings(["i"])),  # DT_INVALID
     grpc.StatusCode.INVALID_ARGUMENT, "arg[user_id] to be string but dtype enum 0"),
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
    assert tf.make_ndarray(ok.outputs[F.RATING_OUTPUT]).tolist() == [2.0]


def test_unknown_model_is_not_found_for_metadata_and_status(stubs):
    metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    metadata.model_spec.name = "nope"
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "nope"
    for call, request in ((stubs[0].GetModelMetadata, metadata), (stubs[1].GetModelStatus, status)):
        with pytest.raises(grpc.RpcError) as raised:
            call(request, timeout=10)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND and "nope" in raised.value.details()


def test_typed_client_round_trips(target):
    with RecsysClient(target.grpc, timeout=10) as client:
        assert client.wait_until_ready(5) == 1
        assert client.predict("ab", "c") == pytest.approx(3.0)
        recs = client.recommend("u", k=3, exclude_rated=False)
        assert [(r.item_id, r.title, r.score) for r in recs] == [("ccc", "CCC", 4.0), ("bb", "BB", 3.0), ("a", "A", 2.0)]
        assert [r.item_id for r in client.recommend("u", k=2)] == ["bb", "a"]
        assert {F.SERVING_DEFAULT, F.PREDICT, F.RECOMMEND} <= set(client.metadata().signature_def)


def test_client_errors_are_one_line(target):
    with RecsysClient(target.grpc, model_name="nope", timeout=5) as client:
        with pytest.raises(ServingError, match=r"model 'nope' on .*:\d+ failed: NOT_FOUND: .*nope"):
            client.predict("u", "i")
        started = time.monotonic()
        with pytest.raises(ServingError, match=r"model 'nope' not ready at .* after 1 s: .*NOT_FOUND"):
            client.wait_until_ready(1)
        assert time.monotonic() - started < 3
    with RecsysClient("127.0.0.1:1", timeout=2) as client:  # nothing listens on port 1
        message = r"^no server answering at 127\.0\.0\.1:1 \(predict on model 'recsys'\)$"
        with pytest.raises(ServingError, match=message):
            client.predict("u", "i")


def _examples(*pairs):
    from tensorflow_serving.apis import input_pb2

    model_input = input_pb2.Input()
    for user, item in pairs:
        example = model_input.example_list.examples.add()
        example.features.feature[F.USER_ID].bytes_list.value.append(user.encode())
        example.features.feature[F.ITEM_ID].bytes_list.value.append(item.encode())
    return model_input


def test_regress_runs_tf_examples_through_a_regression_signature(stubs):
    from tensorflow_serving.apis import regression_pb2

    request = regression_pb2.RegressionRequest(input=_examples(("ab", "xyz"), ("a", "b")))
    request.model_spec.name = F.DEFAULT_MODEL_NAME
    request.model_spec.signature_name = F.REGRESS
    response = stubs[0].Regress(request, timeout=10)
    assert [round(r.value, 3) for r in response.result.regressions] == [5.0, 2.0]
    assert response.model_spec.signature_name == F.REGRESS and response.model_spec.version.value == 1


def test_regress_with_context_merges_it_into_each_example(stubs):
    from tensorflow_serving.apis import regression_pb2

    request = regression_pb2.RegressionRequest()
    request.model_spec.name, request.model_spec.signature_name = F.DEFAULT_MODEL_NAME, F.REGRESS
    request.input.example_list_with_context.context.features.feature[F.USER_ID].bytes_list.value.append(b"uuu")
    for item in ("a", "bb"):
        example = request.input.example_list_with_context.examples.add()
        example.features.feature[F.ITEM_ID].bytes_list.value.append(item.encode())
    assert [r.value for r in stubs[0].Regress(request, timeout=10).result.regressions] == [4.0, 5.0]


@pytest.mark.parametrize("method, signature", [("Regress", F.SERVING_DEFAULT), ("Regress", CLASSIFY),
                                               ("Classify", F.REGRESS), ("Classify", "")])
def test_regress_and_classify_refuse_signatures_of_another_method(stubs, method, signature):
    """As TF Serving: a predict-method signature (serving_default) answers neither."""
    from tensorflow_serving.apis import classification_pb2, regression_pb2

    kind = regression_pb2.RegressionRequest if method == "Regress" else classification_pb2.ClassificationRequest
    request = kind(input=_examples(("a", "b")))
    request.model_spec.name, request.model_spec.signature_name = F.DEFAULT_MODEL_NAME, signature
    with pytest.raises(grpc.RpcError) as raised:
        getattr(stubs[0], method)(request, timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "signature method_name to be tensorflow/serving/" in raised.value.details()


def test_classify_returns_classes_with_scores(stubs):
    from tensorflow_serving.apis import classification_pb2

    request = classification_pb2.ClassificationRequest(input=_examples(("u", "i"), ("uuuu", "iii")))
    request.model_spec.name, request.model_spec.signature_name = F.DEFAULT_MODEL_NAME, CLASSIFY
    result = stubs[0].Classify(request, timeout=10).result
    assert [[(c.label, round(c.score, 3)) for c in row.classes] for row in result.classifications] == [
        [("low", 0.8), ("high", 0.2)], [("low", 0.3), ("high", 0.7)]]


def test_multi_inference_runs_regress_and_classify_on_the_same_examples(stubs):
    from tensorflow_serving.apis import inference_pb2

    request = inference_pb2.MultiInferenceRequest(input=_examples(("u", "i")))
    for signature, method in ((F.REGRESS, tf.saved_model.REGRESS_METHOD_NAME),
                              (CLASSIFY, tf.saved_model.CLASSIFY_METHOD_NAME)):
        task = request.tasks.add(method_name=method)
        task.model_spec.name, task.model_spec.signature_name = F.DEFAULT_MODEL_NAME, signature
    results = stubs[0].MultiInference(request, timeout=10).results
    assert [r.regression_result.regressions[0].value for r in results[:1]] == [2.0]
    assert [round(c.score, 3) for c in results[1].classification_result.classifications[0].classes] == [0.8, 0.2]
    assert [r.model_spec.signature_name for r in results] == [F.REGRESS, CLASSIFY]
    request.tasks[1].model_spec.signature_name = F.REGRESS  # the same signature twice is refused
    request.tasks[1].method_name = tf.saved_model.REGRESS_METHOD_NAME
    with pytest.raises(grpc.RpcError) as raised:
        stubs[0].MultiInference(request, timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_health_service_answers(target):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target.grpc) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def _served_versions(client):
    return [s.version for s in client.status().model_version_status
            if s.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE]


def test_new_versions_are_swapped_in_and_broken_ones_skipped(target):
    """Runs last among the shared-server tests: it changes what the server serves."""
    if not target.model_dir:
        pytest.skip("SERVING_MODEL_DIR not set: cannot write versions for the external server")
    base_path = target.model_dir
    os.makedirs(os.path.join(base_path, "7"))  # a push in progress: no saved_model.pb yet
    broken = os.path.join(base_path, "8")
    os.makedirs(broken)
    with open(os.path.join(broken, "saved_model.pb"), "wb") as f:
        f.write(b"not a protobuf")
    time.sleep(1.5)
    with RecsysClient(target.grpc, timeout=10) as client:
        assert _served_versions(client) == [1] and client.predict("u", "i") == pytest.approx(2.0)
        save_version(base_path, 9, 10.0)
        deadline, failures, answers = time.monotonic() + 30, 0, 0
        while _served_versions(client) != [9] and time.monotonic() < deadline:
            try:  # a swap must fail no request
                assert client.predict("u", "i") in (pytest.approx(2.0), pytest.approx(12.0))
                answers += 1
            except ServingError:
                failures += 1
            time.sleep(0.02)
        assert failures == 0 and answers > 0
        assert _served_versions(client) == [9]
        assert client.predict("u", "i") == pytest.approx(12.0)


def _write_junk_saved_model(base, version):
    os.makedirs(os.path.join(base, str(version)))
    with open(os.path.join(base, str(version), "saved_model.pb"), "wb") as f:
        f.write(b"not a protobuf")


def test_a_corrupt_newest_version_is_skipped_for_the_newest_loadable_and_retried_once_rewritten(tmp_path, caplog):
    from serving.model_store import LabelError, ModelStore, VersionPolicy

    base = str(tmp_path / "recsys")
    save_version(base, 1, 0.0)
    _write_junk_saved_model(base, 2)
    store = ModelStore(F.DEFAULT_MODEL_NAME, base, poll_interval=60)
    store.refresh()
    assert store.versions() == [1] and store.get().version == 1
    assert [r.message for r in caplog.records if "version 2" in r.message and "failed to load" in r.message]
    caplog.clear()
    store.refresh()  # unchanged: not tried (nor logged) again
    assert store.versions() == [1] and not [r for r in caplog.records if "failed to load" in r.message]
    with pytest.raises(LabelError, match="version 2"):  # a label cannot point at it either
        store.configure(VersionPolicy("all"), {"stable": 2})
    assert store.labels == {} and store.versions() == [1]
    save_version(base, 2, 10.0)  # the push completes: saved_model.pb is rewritten
    store.configure(VersionPolicy(), {})
    assert store.versions() == [2]
    rating = store.get().functions[F.PREDICT](**{F.USER_ID: tf.constant(["u"]), F.ITEM_ID: tf.constant(["i"])})
    assert rating[F.RATING_OUTPUT].numpy().tolist() == [12.0]


@pytest.fixture
def labelled(tmp_path):
    """A server of its own over versions 2 (rating offset 0) and 3 (offset 10)."""
    if EXTERNAL:
        pytest.skip("needs a server of its own (SERVING_TARGET is set)")
    base = str(tmp_path / "recsys")
    save_version(base, 2, 0.0)
    save_version(base, 3, 10.0)
    srv, port, models = build_server(F.DEFAULT_MODEL_NAME, base, port=0, host="127.0.0.1", poll_interval=0.2,
                                     options=ServerOptions(admin_port=0))
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    admin = grpc.insecure_channel(f"127.0.0.1:{srv.admin_port}")  # model management: the loopback admin port
    yield base, prediction_service_pb2_grpc.PredictionServiceStub(channel), model_service_pb2_grpc.ModelServiceStub(admin)
    channel.close()
    admin.close()
    srv.stop(0)
    models.stop()


def _reload(model_service, base, labels, versions=(2, 3)):
    from tensorflow_serving.apis import model_management_pb2

    request = model_management_pb2.ReloadConfigRequest()
    model = request.config.model_config_list.config.add(name=F.DEFAULT_MODEL_NAME, base_path=base,
                                                        model_platform="tensorflow")
    model.model_version_policy.specific.versions.extend(versions)
    for label, version in labels.items():
        model.version_labels[label] = version
    return model_service.HandleReloadConfigRequest(request, timeout=30)


def _rating(predictions, label=None, version=None):
    request = _request(F.PREDICT, user_id=_strings(["u"]), item_id=_strings(["i"]))
    if label:
        request.model_spec.version_label = label
    if version:
        request.model_spec.version.value = version
    return float(tf.make_ndarray(predictions.Predict(request, timeout=10).outputs[F.RATING_OUTPUT])[0])


def test_reload_config_serves_specific_versions_under_labels(labelled):
    base, predictions, models = labelled
    assert _rating(predictions) == pytest.approx(12.0)  # default policy: the newest version only
    assert _reload(models, base, {"stable": 2, "canary": 3}).status.error_code == 0
    assert _rating(predictions, label="stable") == pytest.approx(2.0)
    assert _rating(predictions, label="canary") == pytest.approx(12.0)
    assert _rating(predictions, version=2) == pytest.approx(2.0)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = F.DEFAULT_MODEL_NAME
    assert [s.version for s in models.GetModelStatus(request, timeout=10).model_version_status] == [2, 3]
    with pytest.raises(grpc.RpcError) as raised:
        _rating(predictions, label="beta")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND and "beta" in raised.value.details()


def test_a_label_on_a_missing_version_is_refused_and_the_old_config_stays(labelled):
    base, predictions, models = labelled
    _reload(models, base, {"stable": 2})
    with pytest.raises(grpc.RpcError) as raised:
        _reload(models, base, {"stable": 7})
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "version 7" in raised.value.details()
    assert _rating(predictions, label="stable") == pytest.approx(2.0)


def test_moving_a_label_under_load_fails_no_request(labelled):
    import threading

    base, predictions, models = labelled
    _reload(models, base, {"stable": 2})
    seen, failures, stop = set(), [], threading.Event()

    def loop():
        while not stop.is_set():
            try:
                seen.add(round(_rating(predictions, label="stable")))
            except grpc.RpcError as e:  # any failure is a defect of the swap
                failures.append(e.code())

    worker = threading.Thread(target=loop)
    worker.start()
    time.sleep(0.3)
    _reload(models, base, {"stable": 3})
    time.sleep(0.3)
    _reload(models, base, {"stable": 2})
    time.sleep(0.3)
    stop.set()
    worker.join()
    assert failures == [] and seen == {2, 12}


def test_model_config_file_errors_name_the_file(tmp_path):
    from serving.server import read_model_config_file

    path = tmp_path / "models.config"
    path.write_text("model_config_list { config { name: 'recsys' base_path: '/m' } }")
    assert read_model_config_file(str(path)).model_config_list.config[0].name == "recsys"
    path.write_text("not { a config")
    with pytest.raises(ValueError, match="models.config: not a ModelServerConfig"):
        read_model_config_file(str(path))

