"""A tiny SavedModel with the project's serving signatures and exactly predictable outputs."""

import os

import tensorflow as tf

from components import features as F

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
        """Every user "rated" the longest item, ccc: excluding rated items drops it."""
        n = tf.shape(self.items)[0]
        users = tf.repeat(user_id, n)
        items = tf.tile(self.items, [tf.shape(user_id)[0]])
        scores = tf.reshape(self._rate(users, items), [-1, n])
        scores = tf.where(exclude_rated & tf.equal(self.items, "ccc")[None, :], float("-inf"), scores)
        top = tf.math.top_k(scores, k)
        ids = tf.gather(self.items, top.indices)
        return {F.ITEMS_OUTPUT: ids, F.TITLES_OUTPUT: tf.strings.upper(ids), F.SCORES_OUTPUT: top.values}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=F.EXAMPLES_INPUT)])
    def serve_examples(self, examples):
        spec = {F.USER_ID: tf.io.FixedLenFeature([], tf.string), F.ITEM_ID: tf.io.FixedLenFeature([], tf.string)}
        parsed = tf.io.parse_example(examples, spec)
        return {F.RATING_OUTPUT: self._rate(parsed[F.USER_ID], parsed[F.ITEM_ID])}


def save_version(base, version, offset):
    module = TinyRecommender(offset)
    tf.saved_model.save(module, os.path.join(base, str(version)), signatures={
        F.SERVING_DEFAULT: module.serve_examples, F.PREDICT: module.predict, F.RECOMMEND: module.recommend})
