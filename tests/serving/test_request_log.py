"""`recsys serve --log-requests DIR --log-sample-rate R` (issue 19, part 5): sampled Predict requests and answers as
TF Serving's request log (PredictionLog TFRecords), published whole, never blocking a request; the pipeline's
skew check reads them (components/serving_skew.py)."""

import os
import time

import grpc
import pytest
import tensorflow as tf
from prometheus_client import CollectorRegistry
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2, prediction_service_pb2_grpc

from components import features as F
from components import serving_skew
from serving.request_log import RequestLog
from tests.serving.conftest import start_embedded
from tests.serving.tiny_model import save_version


def _recommend(user):
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = F.DEFAULT_MODEL_NAME, F.RECOMMEND
    request.inputs[F.USER_ID].CopyFrom(tf.make_tensor_proto([user], dtype=tf.string))
    request.inputs[F.K_INPUT].CopyFrom(tf.make_tensor_proto(2, dtype=tf.int32))
    request.inputs[F.EXCLUDE_RATED_INPUT].CopyFrom(tf.make_tensor_proto(True))
    return request


def _records(directory):
    return [prediction_log_pb2.PredictionLog.FromString(r) for path in serving_skew.log_files(str(directory))
            for r in tf.data.TFRecordDataset(path).as_numpy_iterator()]


def test_every_answered_request_is_logged_with_its_answer_and_read_as_serving_data(tmp_path):
    base, logs = str(tmp_path / "models"), tmp_path / "logs"
    save_version(base, 1, 0.0)
    server, target = start_embedded(base, log_requests=str(logs), log_sample_rate=1.0)
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target.grpc))
        answers = [stub.Predict(_recommend(f"u{n}"), timeout=10) for n in range(30)]
        assert not serving_skew.log_files(str(logs))  # still being written: nothing published, nothing half-read
    finally:
        server.stop()
    records = _records(logs)
    assert len(records) == 30
    first = records[0]
    spec = first.log_metadata.model_spec
    assert spec.name == F.DEFAULT_MODEL_NAME and spec.version.value == 1
    assert first.log_metadata.sampling_config.sampling_rate == 1.0
    assert {r.predict_log.request.model_spec.signature_name for r in records} == {F.RECOMMEND}
    assert [r.predict_log.response for r in records] == answers  # each request beside the answer it got
    assert not [name for name in os.listdir(logs) if name.startswith(".")]  # no partial file left behind
    columns, requests = serving_skew.serving_examples(str(logs))
    assert requests == 30 and sorted(v[0] for v in columns[F.USER_ID]) == sorted(f"u{n}".encode() for n in range(30))


def test_a_sample_is_kept_and_a_full_queue_drops_instead_of_blocking(tmp_path):
    log = RequestLog(str(tmp_path / "half"), sample_rate=0.5, seed=3, rotate_seconds=0.2)
    response = predict_pb2.PredictResponse()
    for n in range(400):
        log.log(_recommend(f"u{n}"), response)
    time.sleep(0.5)
    published = len(_records(tmp_path / "half"))  # rotated after 0.2 s: readable while the server runs
    log.close()
    kept = len(_records(tmp_path / "half"))
    assert 0 < published <= kept and 150 < kept < 250, kept
    registry = CollectorRegistry()
    full = RequestLog(str(tmp_path / "full"), sample_rate=1.0, queue_size=1, rotate_seconds=60, registry=registry)
    started = time.perf_counter()
    for n in range(2000):
        full.log(_recommend(f"u{n}"), response)
    assert time.perf_counter() - started < 2.0  # never waits for the writer
    full.close()
    written = registry.get_sample_value(":recsys:request_log:records_total")
    dropped = registry.get_sample_value(":recsys:request_log:dropped_total")
    assert dropped > 0 and written + dropped == 2000 and len(_records(tmp_path / "full")) == written
    size = _recommend("u1").ByteSize() + response.ByteSize()
    registry = CollectorRegistry()
    small = RequestLog(str(tmp_path / "small"), sample_rate=1.0, queue_bytes=size - 1, registry=registry)
    for n in range(10):
        small.log(_recommend(f"u{n}"), response)
    small.close()
    # Bounded in bytes too: a request larger than the byte bound is never queued, whatever the count bound.
    assert registry.get_sample_value(":recsys:request_log:records_total") == 0
    assert registry.get_sample_value(":recsys:request_log:dropped_total") == 10
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="--log-sample-rate"):
            RequestLog(str(tmp_path / "bad"), sample_rate=bad)
