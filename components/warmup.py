"""Warm-up requests saved with the model: TF Serving (and our server) replay them before a version serves.

The first call of each signature builds its graph state; replaying one request per signature at load
time moves that cost off the first user's request (`assets.extra/tf_serving_warmup_requests`, a
TFRecord of PredictionLog protos, as TF Serving reads it).
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2, regression_pb2

from components import features as F

WARMUP_K = 10


def _predict(signature: str, **inputs) -> prediction_log_pb2.PredictionLog:
    request = predict_pb2.PredictRequest()
    request.model_spec.signature_name = signature
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(value)
    return prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))


def requests(user_id: bytes, item_id: bytes, signatures=None):
    """One request per signature a client calls (of `signatures`, default all), for a known user and item."""
    users, items = tf.make_tensor_proto([user_id]), tf.make_tensor_proto([item_id])
    example = tf.train.Example()
    example.features.feature[F.USER_ID].bytes_list.value.append(user_id)
    example.features.feature[F.ITEM_ID].bytes_list.value.append(item_id)
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.signature_name = F.REGRESS
    regress.input.example_list.examples.add().CopyFrom(example)
    k, no_ids = tf.make_tensor_proto(WARMUP_K, dtype=tf.int32), tf.make_tensor_proto([], dtype=tf.string)
    logs = {
        F.PREDICT: _predict(F.PREDICT, **{F.USER_ID: users, F.ITEM_ID: items}),
        F.RECOMMEND: _predict(F.RECOMMEND, **{F.USER_ID: users, F.K_INPUT: k,
                                              F.EXCLUDE_RATED_INPUT: tf.make_tensor_proto(True)}),
        F.RECOMMEND_FILTERED: _predict(F.RECOMMEND_FILTERED, **{
            F.USER_ID: users, F.K_INPUT: k, F.EXCLUDE_RATED_INPUT: tf.make_tensor_proto(True),
            F.EXCLUDE_ITEMS_INPUT: items, F.ALLOW_ITEMS_INPUT: no_ids}),
        F.SIMILAR_ITEMS: _predict(F.SIMILAR_ITEMS, **{F.ITEM_ID: items, F.K_INPUT: k}),
        F.RECOMMEND_BY_FEATURES: _predict(F.RECOMMEND_BY_FEATURES, **{
            F.EXAMPLES_INPUT: tf.make_tensor_proto([example.SerializeToString()]), F.K_INPUT: k}),
        F.RECOMMEND_BY_HISTORY: _predict(F.RECOMMEND_BY_HISTORY, **{
            F.USER_ID: users, F.HISTORY_ITEMS_INPUT: tf.make_tensor_proto([[item_id]]),
            F.HISTORY_WEIGHTS_INPUT: tf.make_tensor_proto([], dtype=tf.float32, shape=[1, 0]),
            F.USE_STORED_HISTORY_INPUT: tf.make_tensor_proto(True), F.K_INPUT: k,
            F.EXCLUDE_ITEMS_INPUT: no_ids, F.ALLOW_ITEMS_INPUT: no_ids}),
        F.SERVING_DEFAULT: _predict(F.SERVING_DEFAULT,
                                    **{F.EXAMPLES_INPUT: tf.make_tensor_proto([example.SerializeToString()])}),
        F.REGRESS: prediction_log_pb2.PredictionLog(regress_log=prediction_log_pb2.RegressLog(request=regress)),
    }
    return [log for name, log in logs.items() if signatures is None or name in signatures]


def write(export_dir: str, user_id: bytes, item_id: bytes, signatures=None) -> str:
    path = f"{export_dir.rstrip('/')}/{F.WARMUP_REQUESTS_FILE}"
    tf.io.gfile.makedirs(path.rsplit("/", 1)[0])
    with tf.io.TFRecordWriter(path) as writer:
        for log in requests(user_id, item_id, signatures):
            writer.write(log.SerializeToString())
    return path
