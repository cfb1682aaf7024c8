"""The exported model's serving signatures; each embeds the Transform graph, so requests carry raw ids.

The item catalogue (ids, titles, content features per vocabulary index) is saved with the model:
`recommend` ranks it (optionally without the items each user rated in training, also saved with the
model), and `predict` describes an item from its id. `serving_default` takes the item's
attributes from the tf.Example when the client sends them (cold start for new items) and from the
catalogue otherwise.
"""

from __future__ import annotations

from typing import Dict, Mapping

import tensorflow as tf
import tensorflow_transform as tft
from tensorflow.core.protobuf import saved_model_pb2

from components import catalog as catalog_lib
from components import features as F


def _as_column(values: tf.Tensor) -> tf.Tensor:
    return tf.reshape(values, [-1, 1])


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


def _attach_catalog(model: tf.keras.Model, items: catalog_lib.Catalog) -> None:
    """Variables on the model, so `model.save` stores them and the signatures can read them."""
    model.catalog_item_ids = tf.Variable(items.item_ids, dtype=tf.string, trainable=False, name="catalog_item_ids")
    model.catalog_titles = tf.Variable(list(items.titles), dtype=tf.string, trainable=False, name="catalog_titles")
    model.catalog_genres = tf.Variable(items.genres, trainable=False, name="catalog_genres")
    model.catalog_years = tf.Variable(items.years, trainable=False, name="catalog_years")
    model.rated_row_splits = tf.Variable(items.rated_row_splits, trainable=False, name="rated_row_splits")
    model.rated_items = tf.Variable(items.rated_items, trainable=False, name="rated_items")


def _exclude_rated(model: tf.keras.Model, users: tf.Tensor, scores: tf.Tensor) -> tf.Tensor:
    """Scores with each user's training items set to -inf: a sparse scatter, not a dense mask."""
    rated = tf.gather(tf.RaggedTensor.from_row_splits(model.rated_items, model.rated_row_splits), users)
    batch_rows = tf.repeat(tf.range(tf.shape(users)[0], dtype=tf.int64), rated.row_lengths())
    indices = tf.stack([batch_rows, rated.flat_values], axis=1)
    return tf.tensor_scatter_nd_update(scores, indices, tf.fill([tf.shape(indices)[0]], float("-inf")))


def _catalog_features(model: tf.keras.Model, item_index: tf.Tensor) -> Dict[str, tf.Tensor]:
    """Content features of items by vocabulary index; all-zero for the OOV bucket (an unknown item)."""
    known = item_index < tf.cast(tf.shape(model.catalog_item_ids)[0], item_index.dtype)
    safe = tf.where(known, item_index, tf.zeros_like(item_index))
    mask = tf.cast(known, tf.float32)
    return {
        F.GENRES_MULTI_HOT: tf.gather(model.catalog_genres, safe) * mask[:, None],
        F.YEAR_XF: tf.gather(model.catalog_years, safe) * mask,
    }


def _catalog_candidates(model: tf.keras.Model) -> Dict[str, tf.Tensor]:
    """Every catalogue item as model inputs, in vocabulary order (what `recommend` ranks)."""
    return {
        F.ITEM_INDEX: tf.range(tf.shape(model.catalog_item_ids)[0], dtype=tf.int64),
        F.GENRES_MULTI_HOT: model.catalog_genres,
        F.YEAR_XF: model.catalog_years,
    }


def build(model: tf.keras.Model, tft_output: tft.TFTransformOutput, items: catalog_lib.Catalog):
    """Signatures keyed by name. Attaches what they need to `model` so `model.save` tracks it."""
    model.tft_layer = tft_output.transform_features_layer()
    if len(items.item_ids) != len(items.titles):
        raise ValueError(f"{len(items.item_ids)} vocabulary items but {len(items.titles)} titles")
    _attach_catalog(model, items)
    raw_spec = _serving_feature_spec(tft_output)
    _, _, num_genres = catalog_lib.vocabulary_sizes(tft_output)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=F.EXAMPLES_INPUT)])
    def serve_examples(examples):
        inputs = catalog_lib.model_inputs(model.tft_layer(tf.io.parse_example(examples, raw_spec)), num_genres)
        fallback = _catalog_features(model, inputs[F.ITEM_INDEX])
        described = tf.reduce_sum(inputs[F.GENRES_MULTI_HOT], axis=1) > 0  # the example carried genres
        for key in (F.GENRES_MULTI_HOT, F.YEAR_XF):
            choose = described[:, None] if key == F.GENRES_MULTI_HOT else described
            inputs[key] = tf.where(choose, inputs[key], fallback[key])
        return {F.RATING_OUTPUT: model(inputs)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=tf.saved_model.REGRESS_INPUTS)])
    def regress(inputs):
        return {tf.saved_model.REGRESS_OUTPUTS: serve_examples(inputs)[F.RATING_OUTPUT]}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=F.EXAMPLES_INPUT)])
    def transform_features(examples):
        return model.tft_layer(tf.io.parse_example(examples, raw_spec))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=F.USER_ID),
                                  tf.TensorSpec([None], tf.string, name=F.ITEM_ID)])
    def predict(user_id, item_id):
        transformed = model.tft_layer({F.USER_ID: _as_column(user_id), F.ITEM_ID: _as_column(item_id)})
        inputs = catalog_lib.model_inputs(transformed, num_genres)
        inputs.update(_catalog_features(model, inputs[F.ITEM_INDEX]))
        return {F.RATING_OUTPUT: model(inputs)}

    # Models with an item tower (content) run it over the catalogue here, once, not on every request.
    precompute = getattr(model, "item_vectors", None)
    if precompute is not None:
        model.catalog_item_vectors = tf.Variable(precompute(_catalog_candidates(model)), trainable=False,
                                                 name="catalog_item_vectors")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=F.USER_ID),
                                  tf.TensorSpec([], tf.int32, name=F.K_INPUT),
                                  tf.TensorSpec([], tf.bool, name=F.EXCLUDE_RATED_INPUT)])
    def recommend(user_id, k, exclude_rated):
        users = tf.reshape(model.tft_layer({F.USER_ID: _as_column(user_id)})[F.USER_INDEX], [-1])
        num_items = tf.shape(model.catalog_item_ids)[0]
        cached = {"item_vectors": model.catalog_item_vectors} if precompute is not None else {}
        scores = model.score_all_items(users, _catalog_candidates(model), **cached)
        scores = tf.cond(exclude_rated, lambda: _exclude_rated(model, users, scores), lambda: scores)
        top = tf.math.top_k(scores, k=tf.clip_by_value(k, 0, num_items))
        return {
            F.ITEMS_OUTPUT: tf.gather(model.catalog_item_ids, top.indices),
            F.TITLES_OUTPUT: tf.gather(model.catalog_titles, top.indices),
            F.SCORES_OUTPUT: top.values,
        }

    return {
        F.SERVING_DEFAULT: serve_examples.get_concrete_function(),
        F.REGRESS: regress.get_concrete_function(),
        F.TRANSFORM_FEATURES: transform_features.get_concrete_function(),
        F.PREDICT: predict.get_concrete_function(),
        F.RECOMMEND: recommend.get_concrete_function(),
    }


# Signatures whose SignatureDef must carry TF Serving's method name for Regress/Classify to accept them.
METHOD_NAMES = {F.REGRESS: tf.saved_model.REGRESS_METHOD_NAME}


def set_method_names(export_dir: str, methods: Mapping[str, str] = METHOD_NAMES) -> None:
    """Marks signatures as regress/classify in saved_model.pb (atomically: written beside, then renamed).

    TF2's saved_model.save labels every signature "predict", and TF Serving's Regress and Classify
    refuse a signature without their method name; the loaded functions do not depend on it.
    """
    path = f"{export_dir.rstrip('/')}/saved_model.pb"
    with tf.io.gfile.GFile(path, "rb") as f:
        saved_model = saved_model_pb2.SavedModel.FromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        for name, method in methods.items():
            if name not in meta_graph.signature_def:
                raise ValueError(f"{export_dir}: no signature {name!r} to mark as {method}")
            meta_graph.signature_def[name].method_name = method
    with tf.io.gfile.GFile(path + ".tmp", "wb") as f:
        f.write(saved_model.SerializeToString())
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)
