"""The exported model's serving signatures; each embeds the Transform graph, so requests carry raw ids.

The item catalogue (ids, titles, content features per vocabulary index) is saved with the model:
`recommend` ranks it, without (when `exclude_rated`) every item the user interacted with in any split
the pipeline saw (a table saved with the model); `recommend_filtered` also takes per-request exclude
and allow lists of raw item ids; `similar_items` answers "more like this" from the model's item-item
weights or item vectors; `predict` describes an item from its id. `serving_default` takes the item's
attributes from the tf.Example when the client sends them (cold start for new items) and from the
catalogue otherwise. User-keyed signatures refuse more than `components.guards.MAX_RECOMMEND_USERS` rows
inside the graph, so the real TF Serving is bounded as well as ours.
"""

from __future__ import annotations

import functools
from typing import Dict, Mapping

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tensorflow.core.protobuf import saved_model_pb2

from components import ann
from components import catalog as catalog_lib
from components import features as F
from components import guards
from components.atomic_io import atomic_write
from components.models import history as history_lib
from components.models import neighbours
from components.models import topk


# The signatures are written graph-first (tf.cond, tf.where; Python `if` only on Python values), so AutoGraph has
# nothing to convert. Without it, tracing them (and the Keras and Transform layers they call) skips transpiling
# every function's source: a warm EASE Trainer on a 7-day window (84K interactions) went 14.2 s -> 9.7 s.
_graph_function = functools.partial(tf.function, autograph=False)


def _as_column(values: tf.Tensor) -> tf.Tensor:
    return tf.reshape(values, [-1, 1])


def _serving_feature_spec(tft_output: tft.TFTransformOutput) -> Dict[str, tf.io.FixedLenFeature]:
    """Raw spec without labels, times and slices; only the ids are required, attributes default to missing
    (NaN for a number, '' for a string) when absent."""
    spec = tft_output.raw_feature_spec()
    for key in (F.RATING, F.TIMESTAMP, F.WEIGHT, F.USER_ACTIVITY, F.ITEM_POPULARITY):
        spec.pop(key, None)
    for key, feature in spec.items():
        if isinstance(feature, tf.io.FixedLenFeature) and key not in (F.USER_ID, F.ITEM_ID):
            default = "" if feature.dtype == tf.string else (float("nan") if feature.dtype.is_floating else 0)
            size = feature.shape[0] if feature.shape else 1
            spec[key] = tf.io.FixedLenFeature(feature.shape, feature.dtype, default_value=[default] * size)
    return spec


def _attach_catalog(model: tf.keras.Model, items: catalog_lib.Catalog) -> None:
    """Variables on the model, so `model.save` stores them and the signatures can read them."""
    model.catalog_item_ids = tf.Variable(items.item_ids, dtype=tf.string, trainable=False, name="catalog_item_ids")
    model.catalog_titles = tf.Variable(list(items.titles), dtype=tf.string, trainable=False, name="catalog_titles")
    model.catalog_item_content = tf.Variable(items.item_content, trainable=False, name="catalog_item_content")
    model.catalog_user_content = tf.Variable(items.user_content, trainable=False, name="catalog_user_content")
    # Which items may be recommended (components/availability.py): every answer's top-k leaves the others out.
    model.catalog_active = tf.Variable(items.active, dtype=tf.bool, trainable=False, name="catalog_active")
    model.rated_row_splits = tf.Variable(items.rated_row_splits, trainable=False, name="rated_row_splits")
    model.rated_items = tf.Variable(items.rated_items, trainable=False, name="rated_items")
    if hasattr(model, "score_history"):  # a history model stores every split itself: one copy, not two
        model.seen_row_splits, model.seen_items = model.history_row_splits, model.history_items
    else:
        model.seen_row_splits = tf.Variable(items.seen_row_splits, trainable=False, name="seen_row_splits")
        model.seen_items = tf.Variable(items.seen_items, trainable=False, name="seen_items")
    # What a history-less, attribute-less request is answered with: the items' training counts (log).
    counts = np.bincount(items.rated_items, minlength=len(items.item_ids))[:len(items.item_ids)]
    model.catalog_popularity = tf.Variable(np.log1p(counts).astype(np.float32), trainable=False,
                                           name="catalog_popularity")


def _exclude_seen(model: tf.keras.Model, users: tf.Tensor, scores: tf.Tensor) -> tf.Tensor:
    """Scores with every item each user interacted with (any split the pipeline saw) set to -inf."""
    return topk.exclude_rows(scores, users, model.seen_row_splits, model.seen_items)


def _in_catalogue(model: tf.keras.Model, index: tf.Tensor) -> tf.Tensor:
    """The vocabulary indices that name a catalogue item (unknown ids, the OOV bucket, dropped)."""
    return tf.boolean_mask(index, index < tf.cast(tf.shape(model.catalog_item_ids)[0], index.dtype))


def _catalogue_mask(model: tf.keras.Model, index: tf.Tensor) -> tf.Tensor:
    """[N] bool, True at the given catalogue indices."""
    n = tf.shape(model.catalog_item_ids, out_type=tf.int64)[0]
    return tf.scatter_nd(tf.reshape(tf.cast(index, tf.int64), [-1, 1]), tf.ones_like(index, tf.bool), [n])


def _top_k(model: tf.keras.Model, scores: tf.Tensor, k: tf.Tensor, limit: tf.Tensor = None) -> Dict[str, tf.Tensor]:
    """Top-k of [B, N] scores as ids, titles and scores, retired items left out; k is clipped to the items that may be
    recommended (or `limit`), and a slot left without a candidate (every remaining item excluded) has an empty id
    and a -inf score."""
    active = tf.reduce_sum(tf.cast(model.catalog_active, tf.int32))
    limit = active if limit is None else tf.minimum(limit, active)
    scores = tf.where(model.catalog_active[None, :], scores, float("-inf"))  # retired items: never recommended
    top = tf.math.top_k(scores, k=tf.clip_by_value(k, 0, limit))
    valid = tf.math.is_finite(top.values)
    return {
        F.ITEMS_OUTPUT: tf.where(valid, tf.gather(model.catalog_item_ids, top.indices), ""),
        F.TITLES_OUTPUT: tf.where(valid, tf.gather(model.catalog_titles, top.indices), ""),
        F.SCORES_OUTPUT: top.values,
    }


def _score(model: tf.keras.Model, users: tf.Tensor, candidates: Dict[str, tf.Tensor]) -> tf.Tensor:
    """score_all_items over `candidates`; precomputed item vectors and the users' attributes travel under
    "item_vectors" and "user_content"."""
    candidates = dict(candidates)
    extra = {key: candidates.pop(key) for key in ("item_vectors", "user_content") if key in candidates}
    return model.score_all_items(users, candidates, **extra)


def _catalog_features(model: tf.keras.Model, item_index: tf.Tensor) -> Dict[str, tf.Tensor]:
    """Content of items by vocabulary index; all-zero for the OOV bucket (an unknown item)."""
    known = item_index < tf.cast(tf.shape(model.catalog_item_ids)[0], item_index.dtype)
    safe = tf.where(known, item_index, tf.zeros_like(item_index))
    return {F.ITEM_CONTENT: tf.gather(model.catalog_item_content, safe) * tf.cast(known, tf.float32)[:, None]}


def _user_content(model: tf.keras.Model, user_index: tf.Tensor) -> tf.Tensor:
    """Attributes of users by vocabulary index (the OOV row, an unknown user, is zeros)."""
    return tf.gather(model.catalog_user_content, user_index)


def _catalog_candidates(model: tf.keras.Model) -> Dict[str, tf.Tensor]:
    """Every catalogue item as model inputs, in vocabulary order (what `recommend` ranks)."""
    return {
        F.ITEM_INDEX: tf.range(tf.shape(model.catalog_item_ids)[0], dtype=tf.int64),
        F.ITEM_CONTENT: model.catalog_item_content,
    }


# recommend_by_history's inputs (components/features.py names them); one list, so every implementation agrees.
BY_HISTORY_INPUTS = [tf.TensorSpec([None], tf.string, name=F.USER_ID),
                     tf.TensorSpec([None, None], tf.string, name=F.HISTORY_ITEMS_INPUT),
                     tf.TensorSpec([None, None], tf.float32, name=F.HISTORY_WEIGHTS_INPUT),
                     tf.TensorSpec([], tf.bool, name=F.USE_STORED_HISTORY_INPUT),
                     tf.TensorSpec([], tf.int32, name=F.K_INPUT),
                     tf.TensorSpec([None], tf.string, name=F.EXCLUDE_ITEMS_INPUT),
                     tf.TensorSpec([None], tf.string, name=F.ALLOW_ITEMS_INPUT)]


def checked_history_inputs(user_id: tf.Tensor, history_item_ids: tf.Tensor, history_weights: tf.Tensor):
    """(user_id, history_item_ids, weights) once the limits hold (rows, items per row, one history row per user,
    weights of the ids' shape) or the call fails INVALID_ARGUMENT naming the input; no weights: all 1."""
    user_id = guards.guard_rows(user_id, guards.MAX_RECOMMEND_USERS, F.USER_ID)
    history_item_ids = guards.guard_columns(history_item_ids, guards.MAX_HISTORY_ITEMS, F.HISTORY_ITEMS_INPUT)
    history_weights = guards.guard_columns(history_weights, guards.MAX_HISTORY_ITEMS, F.HISTORY_WEIGHTS_INPUT)
    weights = tf.cond(tf.size(history_weights) > 0, lambda: history_weights,
                      lambda: tf.ones(tf.shape(history_item_ids), tf.float32))
    checks = [tf.debugging.assert_equal(tf.shape(history_item_ids)[0], tf.shape(user_id)[0],
                                        message=f"input {F.HISTORY_ITEMS_INPUT}: one row per {F.USER_ID} expected"),
              tf.debugging.assert_equal(tf.shape(weights), tf.shape(history_item_ids),
                                        message=f"input {F.HISTORY_WEIGHTS_INPUT}: same shape as "
                                                f"{F.HISTORY_ITEMS_INPUT} expected (or empty)")]
    with tf.control_dependencies(checks):
        return tf.identity(user_id), tf.identity(history_item_ids), tf.identity(weights)


def answer_from_history(model, users: tf.Tensor, history_item_ids: tf.Tensor, index: tf.Tensor, weights: tf.Tensor,
                        use_stored_history: tf.Tensor, k: tf.Tensor, allowed: tf.Tensor, scores_of,
                        top_k=None) -> Dict:
    """recommend_by_history's answer: the request's items (vocabulary `index`, OOV = unknown) weighted by the model's
    fresh_weight, with the stored history when asked, scored by `scores_of(history) -> (scores, fallback)`,
    the history and the items outside `allowed` left out; `top_k(scores, k, limit)` (default `_top_k`) answers."""
    n = tf.shape(model.catalog_item_ids, out_type=tf.int64)[0]
    rows = tf.shape(history_item_ids)[0]
    # Unknown ids are ignored and counted (each distinct id once per row), never an error; "" pads a row.
    where = tf.where((tf.cast(index, tf.int64) >= n) & (history_item_ids != ""))
    keys, _ = tf.unique(tf.strings.join([tf.strings.as_string(where[:, 0]), tf.gather_nd(history_item_ids, where)],
                                        separator="\x00"))
    unknown_rows = tf.strings.to_number(tf.strings.split(keys, "\x00").to_tensor(shape=[None, 2])[:, 0], tf.int32)
    stored = history_lib.stored(users, model.seen_row_splits, model.seen_items, n)
    stored = tf.sparse.retain(stored, tf.fill(tf.shape(stored.values), use_stored_history))
    # A request's items are newer than the stored history: beside it they weigh the model's fresh_weight (chosen
    # on validation) against its 1. A row without a stored history (a session, the gate's explicit histories)
    # keeps the request's weights: iALS's fold-in is not blind to scaling a whole history (its confidence is
    # alpha x weight), so a fresh weight there would score every session with an alpha the search never chose.
    fresh = tf.cast(getattr(model, "fresh_weight", 1.0), tf.float32)
    fresh = tf.where(history_lib.lengths(stored) > 0, fresh, 1.0)
    given = history_lib.from_indices(index, weights * fresh[:, None], n)
    history = history_lib.union(given, stored)
    scores, fallback = scores_of(history)
    scores = tf.where(allowed[None, :], history_lib.exclude(scores, history), float("-inf"))
    top_k = top_k or functools.partial(_top_k, model)
    out = dict(top_k(scores, k, tf.reduce_sum(tf.cast(allowed, tf.int32))))
    out[F.UNKNOWN_ITEMS_OUTPUT] = tf.math.bincount(unknown_rows, minlength=rows, maxlength=rows)
    out[F.HISTORY_LENGTH_OUTPUT] = history_lib.lengths(history)
    out[F.FALLBACK_OUTPUT] = fallback
    return out


def build(model: tf.keras.Model, tft_output: tft.TFTransformOutput, items: catalog_lib.Catalog,
          layout: catalog_lib.ContentLayout):
    """Signatures keyed by name. Attaches what they need to `model` so `model.save` tracks it."""
    model.tft_layer = tft_output.transform_features_layer()
    if len(items.item_ids) != len(items.titles):
        raise ValueError(f"{len(items.item_ids)} vocabulary items but {len(items.titles)} titles")
    _attach_catalog(model, items)
    raw_spec = _serving_feature_spec(tft_output)
    uses_user_content = getattr(model, "USES_USER_CONTENT", False)
    user_width = int(model.catalog_user_content.shape[1])

    # What several signatures share is traced once, as a graph function each of them calls, and saved once: the
    # Transform lookups, the catalogue's scores, the exclusions and the top-k. Inlined in every signature, their
    # copies cost a warm EASE Trainer on a 7-day window ~40 % of its tracing (3.7 -> 2.2 s) and saving (2.1 -> 1.3 s);
    # the exported graph went from 3,855 to 2,394 ops, and recommend's latency in-process stayed ~1.1 ms.
    @_graph_function(input_signature=[tf.TensorSpec([None], tf.string)])
    def user_index(user_id):
        """[B] vocabulary indices of raw user ids (an unknown id: the OOV bucket)."""
        return tf.reshape(model.tft_layer({F.USER_ID: _as_column(user_id)})[F.USER_INDEX], [-1])

    @_graph_function(input_signature=[tf.TensorSpec([None], tf.string)])
    def item_index(item_id):
        """[B] vocabulary indices of raw item ids (an unknown id: the OOV bucket)."""
        return tf.reshape(model.tft_layer({F.ITEM_ID: _as_column(item_id)})[F.ITEM_INDEX], [-1])

    @_graph_function(input_signature=[tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([], tf.int32),
                                      tf.TensorSpec([], tf.int32)])
    def top_k(scores, k, limit):
        return _top_k(model, scores, k, limit)

    def top_k_of_catalogue(scores, k):  # no limit but the catalogue's (top_k clips to the active items)
        return top_k(scores, k, tf.size(model.catalog_item_ids))

    @_graph_function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.string)])
    def allowed_items(exclude_item_ids, allow_item_ids):
        """[N] bool: the allow list's items (every item when it is empty) without the exclude list's; unknown ids
        are ignored."""
        def mask(item_ids):
            return _catalogue_mask(model, _in_catalogue(model, item_index(item_ids)))

        allowed = tf.cond(tf.size(allow_item_ids) > 0, lambda: mask(allow_item_ids),
                          lambda: tf.ones_like(model.catalog_item_ids, tf.bool))
        return allowed & ~mask(exclude_item_ids)

    @_graph_function(input_signature=[tf.TensorSpec([None], tf.int64), tf.TensorSpec([None, None], tf.float32)])
    def exclude_seen(users, scores):
        return _exclude_seen(model, users, scores)
    # A rating model's predict/serving_default answer a rating; a ranking model's a score (no rating scale).
    output = F.RATING_OUTPUT if getattr(model, "PREDICTS_RATINGS", True) else F.SCORE_OUTPUT

    pair_inputs = {F.USER_INDEX: tf.TensorSpec([None], tf.int64), F.ITEM_INDEX: tf.TensorSpec([None], tf.int64),
                   F.ITEM_CONTENT: tf.TensorSpec([None, int(model.catalog_item_content.shape[1])], tf.float32),
                   F.USER_CONTENT: tf.TensorSpec([None, user_width], tf.float32)}

    @_graph_function(input_signature=[pair_inputs])
    def pair_scores(inputs):
        """[B]: the model's answer for (user, item) rows described as `pair_inputs`."""
        return model(inputs)

    @_graph_function(input_signature=[tf.TensorSpec([None], tf.string, name=F.EXAMPLES_INPUT)])
    def transform_features(examples):
        return model.tft_layer(tf.io.parse_example(examples, raw_spec))

    @_graph_function(input_signature=[tf.TensorSpec([None], tf.string, name=F.EXAMPLES_INPUT)])
    def serve_examples(examples):
        # A catalogue item (a known user) is described as training saw it; an unknown one by the attributes the
        # example carries (cold start for new items and new users).
        inputs = catalog_lib.model_inputs(transform_features(examples), layout)
        known_item = inputs[F.ITEM_INDEX] < tf.cast(tf.shape(model.catalog_item_ids)[0], inputs[F.ITEM_INDEX].dtype)
        inputs[F.ITEM_CONTENT] = tf.where(known_item[:, None], _catalog_features(model, inputs[F.ITEM_INDEX])[F.ITEM_CONTENT],
                                          inputs[F.ITEM_CONTENT])
        num_users = tf.shape(model.catalog_user_content, out_type=inputs[F.USER_INDEX].dtype)[0]
        known_user = inputs[F.USER_INDEX] < num_users - F.OOV_BUCKETS
        inputs[F.USER_CONTENT] = tf.where(known_user[:, None], _user_content(model, inputs[F.USER_INDEX]),
                                          inputs[F.USER_CONTENT])
        return {output: pair_scores({key: tf.cast(inputs[key], spec.dtype) for key, spec in pair_inputs.items()})}

    @_graph_function(input_signature=[tf.TensorSpec([None], tf.string, name=tf.saved_model.REGRESS_INPUTS)])
    def regress(inputs):
        return {tf.saved_model.REGRESS_OUTPUTS: serve_examples(inputs)[output]}

    @_graph_function(input_signature=[tf.TensorSpec([None], tf.string, name=F.USER_ID),
                                      tf.TensorSpec([None], tf.string, name=F.ITEM_ID)])
    def predict(user_id, item_id):
        inputs = {F.USER_INDEX: user_index(user_id), F.ITEM_INDEX: item_index(item_id)}
        inputs.update(_catalog_features(model, inputs[F.ITEM_INDEX]))
        inputs[F.USER_CONTENT] = _user_content(model, inputs[F.USER_INDEX])
        return {output: pair_scores(inputs)}

    # Models with an item tower (content, two_tower) run it over the catalogue here, once, not per request.
    precompute = getattr(model, "item_vectors", None)
    if precompute is not None:
        model.catalog_item_vectors = tf.Variable(precompute(_catalog_candidates(model)), trainable=False,
                                                 name="catalog_item_vectors")

    @_graph_function(input_signature=[tf.TensorSpec([None], tf.int64),
                                      tf.TensorSpec([None, user_width], tf.float32)])
    def scores_for(users, user_content):
        """[B, N] scores of users (vocabulary indices) described by `user_content` against the catalogue."""
        candidates = _catalog_candidates(model)
        if precompute is not None:
            candidates["item_vectors"] = model.catalog_item_vectors
        if uses_user_content:
            candidates["user_content"] = user_content
        if not getattr(model, "PAIRWISE_SCORING", False):
            return _score(model, users, candidates)
        # Each (user, item) pair goes through hidden layers: score the catalogue in chunks so the activations
        # stay bounded whatever the request's size.
        return guards.score_in_chunks(
            lambda start, end: _score(model, users, {key: value if key == "user_content" else value[start:end]
                                                     for key, value in candidates.items()}),
            tf.shape(users)[0], tf.shape(model.catalog_item_ids)[0])

    @_graph_function(input_signature=[tf.TensorSpec([None], tf.string)])
    def user_scores(user_id):
        """[B, N] scores of the requested users (at most MAX_RECOMMEND_USERS, so real TF Serving is bounded too)."""
        user_id = guards.guard_rows(user_id, guards.MAX_RECOMMEND_USERS, F.USER_ID)
        users = user_index(user_id)
        return users, scores_for(users, _user_content(model, users))

    # The user's attributes as the request sends them; no item is needed (its attributes default to missing).
    user_spec = dict(raw_spec)
    user_spec[F.ITEM_ID] = tf.io.FixedLenFeature([1], tf.string, default_value=[""])

    @_graph_function(input_signature=[tf.TensorSpec([None], tf.string, name=F.EXAMPLES_INPUT),
                                      tf.TensorSpec([], tf.int32, name=F.K_INPUT)])
    def recommend_by_features(examples, k):
        examples = guards.guard_rows(examples, guards.MAX_RECOMMEND_USERS, F.EXAMPLES_INPUT)
        inputs = catalog_lib.model_inputs(model.tft_layer(tf.io.parse_example(examples, user_spec)), layout)
        users = inputs[F.USER_INDEX]
        num_users = tf.shape(model.catalog_user_content, out_type=users.dtype)[0]
        known = users < num_users - F.OOV_BUCKETS  # a known user is described as training saw them
        content = tf.where(known[:, None], _user_content(model, users), inputs[F.USER_CONTENT])
        return top_k_of_catalogue(exclude_seen(users, scores_for(users, content)), k)

    ann_index = getattr(model, "ann_index", None)  # a ScaNN index the Trainer built (`--ann scann`), or None

    def approximate_recommend(user_id, k, exclude_rated):
        """recommend through the index: the users' query vectors from their stored history (and attributes), the
        seen items left out; a user with neither is answered by popularity, as brute force does."""
        user_id = guards.guard_rows(user_id, guards.MAX_RECOMMEND_USERS, F.USER_ID)
        users = tf.cast(user_index(user_id), tf.int64)
        content = _user_content(model, users)
        n = tf.shape(model.catalog_item_ids, out_type=tf.int64)[0]
        history = history_lib.stored(users, model.seen_row_splits, model.seen_items, n)
        queries = model.query_vectors(history, users, content if uses_user_content else None)
        seen = history_lib.from_ragged(users, model.seen_row_splits, model.seen_items)
        seen = tf.ragged.boolean_mask(seen, seen.with_flat_values(tf.fill(tf.shape(seen.flat_values), exclude_rated)))
        kk = tf.clip_by_value(tf.cast(k, tf.int64), 0, n)
        found, scores = ann.top_k_excluding(ann_index, queries, kk, seen)
        unknown = (history_lib.lengths(history) == 0) & (tf.reduce_sum(tf.abs(content), axis=1) == 0)

        def with_brute_force_rows():  # the model's own answer (popularity) for rows with nothing to query with
            rows = tf.where(unknown)
            top = tf.math.top_k(scores_for(tf.gather_nd(users, rows), tf.gather_nd(content, rows)),
                                k=tf.cast(kk, tf.int32))
            return (tf.tensor_scatter_nd_update(found, rows, tf.cast(top.indices, found.dtype)),
                    tf.tensor_scatter_nd_update(scores, rows, top.values))

        found, scores = tf.cond(tf.reduce_any(unknown), with_brute_force_rows, lambda: (found, scores))
        valid = tf.math.is_finite(scores)
        return {F.ITEMS_OUTPUT: tf.where(valid, tf.gather(model.catalog_item_ids, found), ""),
                F.TITLES_OUTPUT: tf.where(valid, tf.gather(model.catalog_titles, found), ""),
                F.SCORES_OUTPUT: scores}

    @_graph_function(input_signature=[tf.TensorSpec([None], tf.string, name=F.USER_ID),
                                      tf.TensorSpec([], tf.int32, name=F.K_INPUT),
                                      tf.TensorSpec([], tf.bool, name=F.EXCLUDE_RATED_INPUT)])
    def recommend(user_id, k, exclude_rated):
        if ann_index is not None:
            return approximate_recommend(user_id, k, exclude_rated)
        users, scores = user_scores(user_id)
        scores = tf.cond(exclude_rated, lambda: exclude_seen(users, scores), lambda: scores)
        return top_k_of_catalogue(scores, k)

    @_graph_function(input_signature=[tf.TensorSpec([None], tf.string, name=F.USER_ID),
                                      tf.TensorSpec([], tf.int32, name=F.K_INPUT),
                                      tf.TensorSpec([], tf.bool, name=F.EXCLUDE_RATED_INPUT),
                                      tf.TensorSpec([None], tf.string, name=F.EXCLUDE_ITEMS_INPUT),
                                      tf.TensorSpec([None], tf.string, name=F.ALLOW_ITEMS_INPUT)])
    def recommend_filtered(user_id, k, exclude_rated, exclude_item_ids, allow_item_ids):
        users, scores = user_scores(user_id)
        scores = tf.cond(exclude_rated, lambda: exclude_seen(users, scores), lambda: scores)
        allowed = allowed_items(exclude_item_ids, allow_item_ids)
        scores = tf.where(allowed[None, :], scores, float("-inf"))
        return top_k(scores, k, tf.reduce_sum(tf.cast(allowed, tf.int32)))

    # A model without history scoring (the rating models) answers a user it has no row for from the history's
    # items' co-occurrence neighbours (item-to-item; components/models/neighbours.py), not by popularity.
    history_model = hasattr(model, "score_history")
    if not history_model:
        index, weight = neighbours.build(items.train_pairs, len(items.item_ids))
        model.catalog_neighbour_index = tf.Variable(index, trainable=False, name="catalog_neighbour_index")
        model.catalog_neighbour_weight = tf.Variable(weight, trainable=False, name="catalog_neighbour_weight")

    def history_scores(history: tf.SparseTensor, users: tf.Tensor, content: tf.Tensor):
        """[B, N] scores of users described by a history (and attributes), and [B] whether a row had neither
        (answered by popularity)."""
        empty = (history_lib.lengths(history) == 0) & (tf.reduce_sum(tf.abs(content), axis=1) == 0)
        if history_model:
            scores = model.score_history(
                history, users, content if uses_user_content else None,
                item_vectors=model.catalog_item_vectors if precompute is not None else None)
        else:
            num_users = tf.shape(model.catalog_user_content, out_type=users.dtype)[0]
            known = users < num_users - F.OOV_BUCKETS
            empty &= ~known
            by_items = neighbours.score(history, model.catalog_neighbour_index, model.catalog_neighbour_weight)
            scores = tf.where(known[:, None], scores_for(users, content), by_items)
        scores = tf.where(empty[:, None], tf.broadcast_to(model.catalog_popularity[None, :], tf.shape(scores)), scores)
        return scores, empty

    @_graph_function(input_signature=BY_HISTORY_INPUTS)
    def recommend_by_history(user_id, history_item_ids, history_weights, use_stored_history, k, exclude_item_ids,
                             allow_item_ids):
        user_id, history_item_ids, weights = checked_history_inputs(user_id, history_item_ids, history_weights)
        users = user_index(user_id)
        index = tf.reshape(item_index(tf.reshape(history_item_ids, [-1])), tf.shape(history_item_ids))
        return answer_from_history(model, users, history_item_ids, index, weights, use_stored_history, k,
                                   allowed_items(exclude_item_ids, allow_item_ids),
                                   lambda history: history_scores(history, users, _user_content(model, users)),
                                   top_k=top_k)

    serving = {
        F.SERVING_DEFAULT: serve_examples.get_concrete_function(),
        F.REGRESS: regress.get_concrete_function(),
        F.TRANSFORM_FEATURES: transform_features.get_concrete_function(),
        F.PREDICT: predict.get_concrete_function(),
        F.RECOMMEND: recommend.get_concrete_function(),
        F.RECOMMEND_FILTERED: recommend_filtered.get_concrete_function(),
        F.RECOMMEND_BY_FEATURES: recommend_by_features.get_concrete_function(),
        F.RECOMMEND_BY_HISTORY: recommend_by_history.get_concrete_function(),
    }

    # "More like this": item-item weights where the model has them (EASE), else the cosine of its item vectors.
    if hasattr(model, "similar_item_scores"):
        similar_scores = model.similar_item_scores
    else:
        vectors = model.similarity_vectors(_catalog_candidates(model))
        model.catalog_similarity_vectors = tf.Variable(tf.math.l2_normalize(vectors, axis=1), trainable=False,
                                                       name="catalog_similarity_vectors")

        def similar_scores(item_index):
            n = tf.shape(model.catalog_similarity_vectors, out_type=tf.int64)[0]  # unknown rows: masked below
            query = tf.gather(model.catalog_similarity_vectors, tf.minimum(item_index, n - 1))
            return tf.matmul(query, model.catalog_similarity_vectors, transpose_b=True)

    @_graph_function(input_signature=[tf.TensorSpec([None], tf.string, name=F.ITEM_ID),
                                      tf.TensorSpec([], tf.int32, name=F.K_INPUT)])
    def similar_items(item_id, k):
        item_id = guards.guard_rows(item_id, guards.MAX_RECOMMEND_USERS, F.ITEM_ID)
        index = tf.cast(item_index(item_id), tf.int64)
        scores = similar_scores(index)
        n = tf.shape(model.catalog_item_ids, out_type=tf.int64)[0]
        known = index < n  # the item itself is never "similar"; an unknown item matches nothing
        rows = tf.range(tf.shape(index, out_type=tf.int64)[0])
        scores = tf.tensor_scatter_nd_update(
            scores, tf.stack([tf.boolean_mask(rows, known), tf.boolean_mask(index, known)], axis=1),
            tf.fill([tf.reduce_sum(tf.cast(known, tf.int32))], float("-inf")))
        scores = tf.where(known[:, None], scores, float("-inf"))
        return top_k_of_catalogue(scores, k)

    serving[F.SIMILAR_ITEMS] = similar_items.get_concrete_function()
    return serving


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
    atomic_write(path, saved_model.SerializeToString())
