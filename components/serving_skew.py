"""Training/serving skew: what the served model was asked (the request log) against what the run trains on.

`recsys serve --log-requests DIR` writes a sample of the Predict requests as TF Serving's request log
(PredictionLog TFRecords). The next run (`recsys run --serving-log DIR`) reads them here as serving data: one
example per request row, with the ids the row names (`user_id`; `item_id` from predict, similar_items and a
history's items), computes their statistics with TFDV and applies the schema's skew comparators (TFDV's
training/serving skew: `validate_statistics(train, schema, serving_statistics=...)`) to this run's training
statistics. The data gate fails the run on skew, or prints it with `--allow-skew`, as it does for drift.

The comparators live in the curated schema (`skew_comparator` on the id features: components/schema_curation.py):
an L-infinity distance between the two distributions of ids above the threshold means serving asks about users
or items in shares far from those training saw (traffic from a crawler hammering one user, a client sending one
item as everyone's history, a catalogue the traffic moved away from).
"""

from __future__ import annotations

import posixpath
from typing import Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_data_validation.statistics import stats_impl
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2
from tensorflow_serving.apis import prediction_log_pb2

from components import features as F

SKEW_PREFIX = "skew vs serving"
# serving/request_log.py publishes its files under these names (its partial files are hidden).
LOG_FILE_PREFIX, LOG_FILE_SUFFIX = "prediction_log-", ".tfrecord"
LOG_FILE_PATTERN = f"{LOG_FILE_PREFIX}*{LOG_FILE_SUFFIX}"
# The request inputs that name ids, and the feature each is counted as.
_ID_INPUTS = ((F.USER_ID, F.USER_ID), (F.ITEM_ID, F.ITEM_ID), (F.HISTORY_ITEMS_INPUT, F.ITEM_ID))
_NOT_COMPARED = ("COMPARATOR_CONTROL_DATA_MISSING", "COMPARATOR_TREATMENT_DATA_MISSING")


def log_files(directory: str) -> List[str]:
    return sorted(tf.io.gfile.glob(posixpath.join(directory, LOG_FILE_PATTERN)))


def _rows(values: np.ndarray, rows: int) -> List[List[bytes]]:
    """A [rows] or [rows, L] string input as each row's non-empty values."""
    values = values.reshape(rows, -1) if values.size else np.zeros((rows, 0), object)
    return [[bytes(v) for v in row if v] for row in values]


def serving_examples(directory: str) -> Tuple[Dict[str, List[Optional[List[bytes]]]], int]:
    """({feature: one value list per request row (None: the row names none)}, requests read) from the log."""
    columns: Dict[str, List[Optional[List[bytes]]]] = {F.USER_ID: [], F.ITEM_ID: []}
    requests = 0
    for path in log_files(directory):
        for serialized in tf.data.TFRecordDataset(path).as_numpy_iterator():
            record = prediction_log_pb2.PredictionLog.FromString(serialized)
            if not record.HasField("predict_log"):
                continue
            inputs = record.predict_log.request.inputs
            named = {name: tf.make_ndarray(inputs[name]) for name, _ in _ID_INPUTS if name in inputs}
            if not named:
                continue
            requests += 1
            rows = max(len(value) if value.ndim else 1 for value in named.values())
            by_feature: Dict[str, List[List[bytes]]] = {F.USER_ID: [[] for _ in range(rows)],
                                                        F.ITEM_ID: [[] for _ in range(rows)]}
            for name, feature in _ID_INPUTS:
                if name in named and (named[name].ndim == 0 or len(named[name]) == rows):
                    for row, values in enumerate(_rows(np.asarray(named[name], object), rows)):
                        by_feature[feature][row].extend(values)
            for feature, rows_of in by_feature.items():
                columns[feature].extend(values or None for values in rows_of)
    return columns, requests


def serving_statistics(directory: str) -> Tuple[Optional[statistics_pb2.DatasetFeatureStatisticsList], int, int]:
    """(TFDV statistics of the logged request rows, or None without any; requests; rows)."""
    columns, requests = serving_examples(directory)
    rows = len(columns[F.USER_ID])
    if not rows:
        return None, requests, 0
    batch = pa.RecordBatch.from_arrays([pa.array(columns[name], type=pa.list_(pa.binary())) for name in columns],
                                       list(columns))
    return stats_impl.generate_statistics_in_memory(batch, tfdv.StatsOptions()), requests, rows


def _comparator_reasons(info: anomalies_pb2.AnomalyInfo) -> List[str]:
    kinds = [anomalies_pb2.AnomalyInfo.Type.Name(reason.type) for reason in info.reason]
    return [reason.description or reason.short_description for reason, kind in zip(info.reason, kinds)
            if kind.startswith("COMPARATOR_") and kind not in _NOT_COMPARED]


def skew_problems(training: statistics_pb2.DatasetFeatureStatisticsList,
                  serving: statistics_pb2.DatasetFeatureStatisticsList, schema: schema_pb2.Schema) -> List[str]:
    """The schema's skew comparators between this run's training statistics and the serving ones, one line each."""
    anomalies = tfdv.validate_statistics(training, schema, serving_statistics=serving)
    return [f"{SKEW_PREFIX}: feature '{name}': {reason}"
            for name, info in sorted(anomalies.anomaly_info.items()) for reason in _comparator_reasons(info)]


def check(directory: str, training: statistics_pb2.DatasetFeatureStatisticsList,
          schema: schema_pb2.Schema) -> List[str]:
    """Skew problems of the request log in `directory` (printing what was compared), or [] without a log."""
    serving, requests, rows = serving_statistics(directory)
    if serving is None:
        print(f"{SKEW_PREFIX}: not checked, no logged requests naming ids in {directory} ({LOG_FILE_PATTERN})")
        return []
    compared = [f.name for f in schema.feature if f.HasField("skew_comparator")]
    print(f"{SKEW_PREFIX}: {requests} logged requests ({rows} rows) from {directory} against the training split; "
          f"comparators on {', '.join(compared) or 'no feature (the schema has no skew_comparator)'}")
    return skew_problems(training, serving, schema)
