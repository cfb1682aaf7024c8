"""A tiny SavedModel with the project's serving signatures and exactly predictable outputs.

`python -m tests.serving.tiny_model DIR` writes versions 1 (offset 0) and 2 (offset 10) under DIR, so
the conformance suite can be pointed at a real TF Serving serving DIR (see tests/serving/conftest.py).
"""

import os
import sys

import tensorflow as tf

from components import features as F
from components import signatures, warmup
from components.guards import MAX_HISTORY_ITEMS, MAX_RECOMMEND_USERS, guard_columns, guard_rows

CLASSIFY = "classify"

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
        """Every user "rated" the longest item, ccc: excluding rated items drops it.

        Guarded like the Trainer's export: over MAX_RECOMMEND_USERS users the SavedModel itself refuses.
        """
        user_id = guard_rows(user_id, MAX_RECOMMEND_USERS, F.USER_ID)
        n = tf.shape(self.items)[0]
        users = tf.repeat(user_id, n)
        items = tf.tile(self.items, [tf.shape(user_id)[0]])
        scores = tf.reshape(self._rate(users, items), [-1, n])
        scores = tf.where(exclude_rated & tf.equal(self.items, "ccc")[None, :], float("-inf"), scores)
        top = tf.math.top_k(scores, tf.minimum(k, n))  # k beyond the catalogue: all of it, as the real model
        ids = tf.gather(self.items, top.indices)
        return {F.ITEMS_OUTPUT: ids, F.TITLES_OUTPUT: tf.strings.upper(ids), F.SCORES_OUTPUT: top.values}

    @tf.function(input_signature=signatures.BY_HISTORY_INPUTS)
    def recommend_by_history(self, user_id, history_item_ids, history_weights, use_stored_history, k,
                             exclude_item_ids, allow_item_ids):
        """The recommend_by_history contract with exact values.

        Each catalogue item the row's history holds counts once, with its largest weight (an empty
        weights tensor: 1.0); a known user (any non-empty user_id) has the stored history ["ccc"], used
        when use_stored_history. score = offset + len(item_id) + the history's total weight; the history,
        the stored history when used, excluded ids and, with a non-empty allow list, ids outside it are
        left out (a slot without a candidate: id "", score -inf). unknown_history_items counts the
        distinct non-empty ids not in CATALOGUE; popularity_fallback is set when the row was scored
        from no item (its scores are then offset + len(item_id): the longest items are "most popular").
        """
        user_id = guard_rows(user_id, MAX_RECOMMEND_USERS, F.USER_ID)
        history_item_ids = guard_columns(guard_rows(history_item_ids, MAX_RECOMMEND_USERS, F.HISTORY_ITEMS_INPUT),
                                         MAX_HISTORY_ITEMS, F.HISTORY_ITEMS_INPUT)
        history_weights = guard_columns(history_weights, MAX_HISTORY_ITEMS, F.HISTORY_WEIGHTS_INPUT)
        shape = tf.shape(history_item_ids)
        checks = [tf.debugging.assert_equal(shape[0], tf.shape(user_id)[0],
                                            message=f"input {F.HISTORY_ITEMS_INPUT}: one row per {F.USER_ID} expected")]
        weights = tf.cond(tf.size(history_weights) > 0, lambda: history_weights, lambda: tf.ones(shape, tf.float32))
        checks.append(tf.debugging.assert_equal(
            tf.shape(weights), shape,
            message=f"input {F.HISTORY_WEIGHTS_INPUT}: same shape as {F.HISTORY_ITEMS_INPUT} expected (or empty)"))
        with tf.control_dependencies(checks):
            matches = tf.equal(history_item_ids[:, :, None], self.items[None, None, :])  # [rows, L, N]
        # Each catalogue item once, with its largest weight; the stored history ("ccc") for known users.
        weight = tf.reduce_max(tf.where(matches, weights[:, :, None], float("-inf")), axis=1)  # [rows, N]
        held = tf.reduce_any(matches, axis=1)
        stored = use_stored_history & (user_id != "")[:, None] & tf.equal(self.items, "ccc")[None, :]
        weight = tf.where(stored, tf.maximum(weight, 1.0), weight)
        held |= stored
        total = tf.reduce_sum(tf.where(held, weight, 0.0), axis=1)  # [rows]
        n = tf.shape(self.items)[0]
        scores = self.offset + tf.cast(tf.strings.length(self.items), tf.float32)[None, :] + total[:, None]
        allowed = tf.logical_or(tf.size(allow_item_ids) == 0,
                                tf.reduce_any(tf.equal(self.items[:, None], allow_item_ids[None, :]), axis=1))
        allowed &= ~tf.reduce_any(tf.equal(self.items[:, None], exclude_item_ids[None, :]), axis=1)
        scores = tf.where(held | ~allowed[None, :], float("-inf"), scores)
        top = tf.math.top_k(scores, tf.clip_by_value(k, 0, n))
        valid = tf.math.is_finite(top.values)
        ids = tf.where(valid, tf.gather(self.items, top.indices), "")
        # Distinct unknown ids: hashed, sorted per row, counted where the value changes.
        unknown = ~tf.reduce_any(matches, axis=2) & (history_item_ids != "")
        hashed = tf.sort(tf.where(unknown, tf.strings.to_hash_bucket_fast(history_item_ids, 1 << 62), -1), axis=1)
        previous = tf.concat([tf.fill([shape[0], 1], tf.constant(-1, tf.int64)), hashed[:, :-1]], axis=1)
        length = tf.reduce_sum(tf.cast(held, tf.int32), axis=1)
        return {F.ITEMS_OUTPUT: ids, F.TITLES_OUTPUT: tf.strings.upper(ids), F.SCORES_OUTPUT: top.values,
                F.UNKNOWN_ITEMS_OUTPUT: tf.reduce_sum(tf.cast((hashed != previous) & (hashed >= 0), tf.int32), axis=1),
                F.HISTORY_LENGTH_OUTPUT: length, F.FALLBACK_OUTPUT: tf.equal(length, 0)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=F.EXAMPLES_INPUT)])
    def serve_examples(self, examples):
        return {F.RATING_OUTPUT: self._rate_examples(examples)}

    def _rate_examples(self, examples):
        spec = {F.USER_ID: tf.io.FixedLenFeature([], tf.string), F.ITEM_ID: tf.io.FixedLenFeature([], tf.string)}
        parsed = tf.io.parse_example(examples, spec)
        return self._rate(parsed[F.USER_ID], parsed[F.ITEM_ID])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=tf.saved_model.REGRESS_INPUTS)])
    def regress(self, inputs):
        return {tf.saved_model.REGRESS_OUTPUTS: self._rate_examples(inputs)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=tf.saved_model.CLASSIFY_INPUTS)])
    def classify(self, inputs):
        """Classes "low" and "high" with scores 1 - p and p, p = rating / 10."""
        p = self._rate_examples(inputs) / 10.0
        rows = tf.shape(p)[0]
        return {tf.saved_model.CLASSIFY_OUTPUT_CLASSES: tf.tile([["low", "high"]], [rows, 1]),
                tf.saved_model.CLASSIFY_OUTPUT_SCORES: tf.stack([1.0 - p, p], axis=1)}


# The signatures a TinyRecommender has that the Trainer's warm-up covers (classify is the tiny model's own).
WARMUP_SIGNATURES = (F.PREDICT, F.RECOMMEND, F.SERVING_DEFAULT, F.REGRESS)


def save_version(base, version, offset, warmup_requests=None):
    """Writes version `version`; `warmup_requests` (PredictionLogs) go to assets.extra like the Trainer's."""
    module = TinyRecommender(offset)
    path = os.path.join(base, str(version))
    # Complete before it appears, like a push; a directory already there is rewritten in place.
    tmp = path if os.path.exists(path) else os.path.join(base, f".tmp-{version}")
    tf.saved_model.save(module, tmp, signatures={
        F.SERVING_DEFAULT: module.serve_examples, F.PREDICT: module.predict, F.RECOMMEND: module.recommend,
        F.RECOMMEND_BY_HISTORY: module.recommend_by_history, F.REGRESS: module.regress, CLASSIFY: module.classify})
    signatures.set_method_names(tmp, {F.REGRESS: tf.saved_model.REGRESS_METHOD_NAME,
                                      CLASSIFY: tf.saved_model.CLASSIFY_METHOD_NAME})
    if warmup_requests is not None:
        os.makedirs(os.path.join(tmp, "assets.extra"), exist_ok=True)
        with tf.io.TFRecordWriter(os.path.join(tmp, F.WARMUP_REQUESTS_FILE)) as writer:
            for log in warmup_requests:
                writer.write(log.SerializeToString())
    if tmp != path:
        os.rename(tmp, path)
    return path


if __name__ == "__main__":
    save_version(sys.argv[1], 1, 0.0, warmup.requests(b"u", b"a", WARMUP_SIGNATURES))
    save_version(sys.argv[1], 2, 10.0, warmup.requests(b"u", b"a", WARMUP_SIGNATURES))
