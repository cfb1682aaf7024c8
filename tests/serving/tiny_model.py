"""A tiny SavedModel with the project's serving signatures and exactly predictable outputs.

`python -m tests.serving.tiny_model DIR` writes versions 1 (offset 0) and 2 (offset 10) under DIR, so
the conformance suite can be pointed at a real TF Serving serving DIR (see tests/serving/conftest.py).
"""

import os
import sys

import tensorflow as tf

from components import features as F
from components import signatures, warmup
from serving.limits import MAX_RECOMMEND_USERS, guard_rows

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
        F.REGRESS: module.regress, CLASSIFY: module.classify})
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
