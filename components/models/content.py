"""Content-based MLP: the user (id embedding + projected attributes) and the item's attributes, through a
Dense stack.

The item is described only by its declared attributes, never by its id, so an item nobody rated in
training is scored as well as any other with the same attributes (item cold start); a user's own
attributes shape their vector, so a user without history is not a blank (user cold start).
"""

import tensorflow as tf

from components import features as F
from components.models.base import ModelDims, RatingHead, all_pairs, content_features, embedding, user_features
from components.training_config import TrainingConfig


class ContentMLP(tf.keras.Model):
    PAIRWISE_SCORING = True  # every (user, item) pair runs through hidden layers: recommend scores in chunks
    USES_USER_CONTENT = True

    def __init__(self, dims: ModelDims, config: TrainingConfig):
        super().__init__(name="content")
        self.user_embedding = embedding(dims.num_users, config, ids=F.USER_ID)
        self.user_attributes = tf.keras.layers.Dense(config.embedding_dim, use_bias=False, name="user_attributes")
        self.item_tower = tf.keras.layers.Dense(
            config.embedding_dim, activation="relu", kernel_regularizer=tf.keras.regularizers.l2(config.dense_l2))
        self.head = RatingHead(config, dims.global_mean)

    def _rate(self, user_vectors, item_vectors, training=False):
        return self.head(tf.concat([user_vectors, item_vectors], axis=-1), training=training)

    def user_vectors(self, users, user_content):
        return self.user_embedding(users) + self.user_attributes(user_content)

    def call(self, inputs, training=False):
        users = inputs[F.USER_INDEX]
        return self._rate(self.user_vectors(users, user_features(inputs, users)),
                          self.item_tower(content_features(inputs)), training)

    def item_vectors(self, items):
        """The item tower over catalogue items: the export computes it once and saves it with the model."""
        return self.item_tower(content_features(items))

    def score_all_items(self, users, items, item_vectors=None, user_content=None):
        """[batch, N]: every pair through the stack; `item_vectors` (precomputed) skips the item tower."""
        if item_vectors is None:
            item_vectors = self.item_vectors(items)
        user_content = user_features({} if user_content is None else {F.USER_CONTENT: user_content}, users)
        pair_users, pair_items = all_pairs(self.user_vectors(users, user_content), item_vectors)
        return tf.reshape(self._rate(pair_users, pair_items), [tf.shape(users)[0], -1])


    def similarity_vectors(self, items):
        """[N, d] item vectors for "more like this" (cosine): the item tower."""
        return self.item_vectors(items)


def build(dims: ModelDims, config: TrainingConfig, rows=None) -> tf.keras.Model:
    """`rows` (a history) is unused: this model has no implicit term."""
    return ContentMLP(dims, config)
