"""Embedding-bias matrix factorisation: rating = mu + b_user + b_item + <p_user, q_item>.

With `rating_history` on, the user vector also holds SVD++'s implicit term (p_user + the normalised sum of
the vectors of the items the user chose: components/models/chosen_items.py); off, it is the seeds' model
exactly. `score_all_items` is the same formula as one matrix product over the catalogue, which is what
the `recommend` signature ranks with (no per-item loop at request time).
"""

from typing import Optional

import tensorflow as tf

from components import features as F
from components.models import chosen_items
from components.models.base import ModelDims, embedding
from components.training_config import TrainingConfig

USES_RATING_HISTORY = True  # `rating_history` applies (the Trainer and the Tuner decide `auto` with it)


class MatrixFactorization(tf.keras.Model):
    def __init__(self, dims: ModelDims, config: TrainingConfig, rows: Optional[chosen_items.Rows] = None):
        super().__init__(name="mf")
        self.user_embedding = embedding(dims.num_users, config, ids=F.USER_ID)
        self.item_embedding = embedding(dims.num_items, config, ids=F.ITEM_ID)
        self.user_bias = embedding(dims.num_users, config, dim=1, ids=F.USER_ID)
        self.item_bias = embedding(dims.num_items, config, dim=1, ids=F.ITEM_ID)
        self.global_mean = tf.Variable(dims.global_mean, dtype=tf.float32, name="global_mean")
        self.chosen = chosen_items.layer(dims.num_items, config, rows)  # None: the seeds' form

    def _user_vectors(self, users):
        vectors = self.user_embedding(users)
        return vectors if self.chosen is None else vectors + self.chosen(users)

    def call(self, inputs, training=False):
        """The embeddings and biases penalise the rows they look up while training (RowL2Embedding)."""
        users, items = inputs[F.USER_INDEX], inputs[F.ITEM_INDEX]
        dot = tf.reduce_sum(self._user_vectors(users) * self.item_embedding(items), axis=1)
        biases = tf.squeeze(self.user_bias(users), 1) + tf.squeeze(self.item_bias(items), 1)
        return self.global_mean + biases + dot

    def score_all_items(self, users, items):
        """[batch, N] scores of each user for the N catalogue items in `items`."""
        item_index = items[F.ITEM_INDEX]
        item_vectors = tf.gather(self.item_embedding.embeddings, item_index)
        item_bias = tf.reshape(tf.gather(self.item_bias.embeddings, item_index), [1, -1])
        return (tf.matmul(self._user_vectors(users), item_vectors, transpose_b=True)
                + self.user_bias(users) + item_bias + self.global_mean)


    def similarity_vectors(self, items):
        """[N, d] item vectors for "more like this" (cosine): the item embeddings."""
        return tf.gather(self.item_embedding.embeddings, items[F.ITEM_INDEX])


def build(dims: ModelDims, config: TrainingConfig, rows: Optional[chosen_items.Rows] = None) -> tf.keras.Model:
    """`rows`: the users' history the implicit term reads (what the model is fitted on), with rating_history on."""
    return MatrixFactorization(dims, config, rows)
