"""The exported model's serving signatures; each embeds the Transform graph, so requests carry raw ids."""

from __future__ import annotations

from typing import Dict, Sequence

import tensorflow as tf
import tensorflow_transform as tft

from components import features as F


def _as_column(values: tf.Tensor) -> tf.Tensor:
    return tf.reshape(values, [-1, 1])


def _rating(model: tf.keras.Model, transformed: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    return {F.RATING_OUTPUT: model(transformed)}


def _serving_feature_spec(tft_output: tft.TFTransformOutput) -> Dict[str, tf.io.FixedLenFeature]:
    """Raw spec without the label; only the ids are required, item attributes default when absent."""
    spec = tft_output.raw_feature_spec()
    spec.pop(F.LABEL_KEY)
    spec.pop(F.TIMESTAMP, None)
    for key, feature in spec.items():
        if isinstance(feature, tf.io.FixedLenFeature) and key not in (F.USER_ID, F.ITEM_ID):
            default = "" if feature.dtype == tf.string else 0
            spec[key] = tf.io.FixedLenFeature(feature.shape, feature.dtype, default_value=[default] * feature.shape[0])
    return spec


def build(
    model: tf.keras.Model,
    tft_output: tft.TFTransformOutput,
    item_titles: Sequence[bytes],
) -> Dict[str, tf.types.experimental.ConcreteFunction]:
    """Signatures keyed by name. Attaches what they need to `model` so `model.save` tracks it."""
    model.tft_layer = tft_output.transform_features_layer()
    item_ids = tft_output.vocabulary_by_name(F.ITEM_VOCAB)
    if len(item_ids) != len(item_titles):
        raise ValueError(f"{len(item_ids)} vocabulary items but {len(item_titles)} titles")
    model.catalog_item_ids = tf.Variable(item_ids, dtype=tf.string, trainable=False, name="catalog_item_ids")
    model.catalog_titles = tf.Variable(list(item_titles), dtype=tf.string, trainable=False, name="catalog_titles")
    raw_spec = _serving_feature_spec(tft_output)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=F.EXAMPLES_INPUT)])
    def serve_examples(examples):
        raw = tf.io.parse_example(examples, raw_spec)
        return _rating(model, model.tft_layer(raw))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=F.EXAMPLES_INPUT)])
    def transform_features(examples):
        return model.tft_layer(tf.io.parse_example(examples, raw_spec))

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name=F.USER_ID),
            tf.TensorSpec([None], tf.string, name=F.ITEM_ID),
        ]
    )
    def predict(user_id, item_id):
        transformed = model.tft_layer({F.USER_ID: _as_column(user_id), F.ITEM_ID: _as_column(item_id)})
        return _rating(model, transformed)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name=F.USER_ID),
            tf.TensorSpec([], tf.int32, name=F.K_INPUT),
        ]
    )
    def recommend(user_id, k):
        users = tf.reshape(model.tft_layer({F.USER_ID: _as_column(user_id)})[F.USER_INDEX], [-1])
        num_items = tf.shape(model.catalog_item_ids)[0]
        scores = model.score_all_items(users, num_items)
        top = tf.math.top_k(scores, k=tf.clip_by_value(k, 0, num_items))
        return {
            F.ITEMS_OUTPUT: tf.gather(model.catalog_item_ids, top.indices),
            F.TITLES_OUTPUT: tf.gather(model.catalog_titles, top.indices),
            F.SCORES_OUTPUT: top.values,
        }

    return {
        F.SERVING_DEFAULT: serve_examples.get_concrete_function(),
        F.TRANSFORM_FEATURES: transform_features.get_concrete_function(),
        F.PREDICT: predict.get_concrete_function(),
        F.RECOMMEND: recommend.get_concrete_function(),
    }
