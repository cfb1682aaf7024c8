"""Collaborative MLP (NCF style): user and item embeddings, concatenated, through a Dense stack.

Unlike MF it can learn non-linear user-item interactions; the rating is centred on the global
mean so training starts from the baseline rather than from zero.
"""

import tensorflow as tf

from components import features as F
from components.models.base import ModelDims, RatingHead, all_pairs, embedding
from components.training_config import TrainingConfig


class CollaborativeMLP(tf.keras.Model):
    PAIRWISE_SCORING = True  # every (user, item) pair runs through hidden layers: recommend scores in chunks

    def __init__(self, dims: ModelDims, config: TrainingConfig):
        super().__init__(name="mlp")
        self.user_embedding = embedding(dims.num_users, config, ids=F.USER_ID)
        self.item_embedding = embedding(dims.num_items, config, ids=F.ITEM_ID)
        self.head = RatingHead(config, dims.global_mean)

    def _rate(self, user_vectors, item_vectors, training=False):
        return self.head(tf.concat([user_vectors, item_vectors], axis=-1), training=training)

    def call(self, inputs, training=False):
        return self._rate(self.user_embedding(inputs[F.USER_INDEX]), self.item_embedding(inputs[F.ITEM_INDEX]),
                          training)

    def score_all_items(self, users, items):
        """[batch, N]: every (user, item) pair through the MLP in one batched call."""
        item_vectors = tf.gather(self.item_embedding.embeddings, items[F.ITEM_INDEX])
        pair_users, pair_items = all_pairs(self.user_embedding(users), item_vectors)
        return tf.reshape(self._rate(pair_users, pair_items), [tf.shape(users)[0], -1])


    def similarity_vectors(self, items):
        """[N, d] item vectors for "more like this" (cosine): the item embeddings."""
        return tf.gather(self.item_embedding.embeddings, items[F.ITEM_INDEX])


def build(dims: ModelDims, config: TrainingConfig, rows=None) -> tf.keras.Model:
    """`rows` (a history) is unused: this model has no implicit term."""
    return CollaborativeMLP(dims, config)
