"""Training/serving skew from the request log (issue 19, part 5): the logged requests' ids as serving statistics, the
schema's skew comparators against the training statistics, and the data gate's verdict."""

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_serving.apis import prediction_log_pb2

from components import features as F
from components import serving_skew
from components.schema_curation import curate

USERS = [f"u{n:03d}" for n in range(200)]
ITEMS = [f"i{n:03d}" for n in range(100)]


def _training():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({F.USER_ID: rng.choice(USERS, 5000), F.ITEM_ID: rng.choice(ITEMS, 5000),
                          F.RATING: rng.integers(1, 6, 5000).astype(float)})
    statistics = tfdv.generate_statistics_from_dataframe(frame)
    return statistics, curate(tfdv.infer_schema(statistics), not_in_serving=[F.RATING], drift_features=[])


def _log(directory, requests, name="prediction_log-test.tfrecord"):
    with tf.io.TFRecordWriter(str(directory / name)) as writer:
        for signature, inputs in requests:
            record = prediction_log_pb2.PredictionLog()
            request = record.predict_log.request
            request.model_spec.name, request.model_spec.signature_name = F.DEFAULT_MODEL_NAME, signature
            for key, value in inputs.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            writer.write(record.SerializeToString())


def test_traffic_like_training_passes_and_a_hammered_user_is_skew(tmp_path):
    training, schema = _training()
    assert {f.name for f in schema.feature if f.HasField("skew_comparator")} == {F.USER_ID, F.ITEM_ID}
    rng = np.random.default_rng(1)
    normal = tmp_path / "normal"
    normal.mkdir()
    _log(normal, [(F.RECOMMEND, {F.USER_ID: list(rng.choice(USERS, 4)), F.K_INPUT: np.int32(10)}) for _ in range(100)]
         + [(F.PREDICT, {F.USER_ID: list(rng.choice(USERS, 2)), F.ITEM_ID: list(rng.choice(ITEMS, 2))})
            for _ in range(100)])
    assert serving_skew.check(str(normal), training, schema) == []
    columns, requests = serving_skew.serving_examples(str(normal))
    assert requests == 200 and len(columns[F.USER_ID]) == 600  # one example per request row
    assert sum(values is not None for values in columns[F.ITEM_ID]) == 200  # only predict rows name items

    hammered = tmp_path / "hammered"
    hammered.mkdir()
    _log(hammered, [(F.RECOMMEND, {F.USER_ID: ["u007"], F.K_INPUT: np.int32(10)}) for _ in range(80)]
         + [(F.RECOMMEND_BY_HISTORY, {F.USER_ID: [""], F.HISTORY_ITEMS_INPUT: np.array([["i001", "i002", ""]])})
            for _ in range(40)] + [(F.RECOMMEND, {F.USER_ID: [u], F.K_INPUT: np.int32(10)}) for u in USERS[:120]])
    problems = serving_skew.check(str(hammered), training, schema)
    assert len(problems) == 2, problems  # u007 asked for a third of the time, i001/i002 as half the history items
    assert problems[0].startswith(f"{serving_skew.SKEW_PREFIX}: feature '{F.ITEM_ID}': ") and "i00" in problems[0]
    assert problems[1].startswith(f"{serving_skew.SKEW_PREFIX}: feature '{F.USER_ID}': ") and "u007" in problems[1]

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".prediction_log-partial.tmp-1").write_bytes(b"half a record")  # a file being written: not read
    assert serving_skew.serving_statistics(str(empty)) == (None, 0, 0)
    assert serving_skew.check(str(empty), training, schema) == []


def test_the_data_gate_fails_on_skew_unless_allowed(tmp_path, capsys):
    """The gate (`recsys run --serving-log DIR`) compares the run's train split with the log: one line naming the
    feature, or a printed warning with --allow-skew; no log files: not checked, said so."""
    from components import data_gate as G
    from tests.components.test_data_gate import _anomalies_artifact, _gate, _schema_artifact, _stats_artifact

    training, schema = _training()
    log = tmp_path / "log"
    log.mkdir()
    _log(log, [(F.RECOMMEND, {F.USER_ID: ["u007"], F.K_INPUT: np.int32(10)}) for _ in range(60)]
         + [(F.RECOMMEND, {F.USER_ID: [u], F.K_INPUT: np.int32(10)}) for u in USERS[:100]])
    inputs = {"anomalies": _anomalies_artifact(tmp_path / "anomalies"),
              "statistics": _stats_artifact(training, tmp_path / "stats"),
              "schema": _schema_artifact(schema, tmp_path / "schema")}
    with pytest.raises(G.DataValidationError, match=r"skew vs serving: feature 'user_id': .*u007") as error:
        _gate(inputs, serving_log=str(log))
    assert "\n" not in str(error.value)
    _gate(inputs, serving_log=str(log), allow_skew=True)
    assert "training/serving skew (allowed, not failing the run): skew vs serving: feature 'user_id'" in \
        capsys.readouterr().out
    _gate(inputs, serving_log=str(tmp_path / "anomalies"))  # a directory without log files
    assert "skew vs serving: not checked, no logged requests" in capsys.readouterr().out
    _gate(inputs)  # no --serving-log: no check
