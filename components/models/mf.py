"""Embedding-bias matrix factorisation: rating = mu + b_user + b_item + <p_user, q_item>.

`score_all_items` is the same formula as one matrix product over the catalogue, which is what
the `recommend` signature ranks with (no per-item loop at request time).
"""

import tensorflow as tf

from components import features as F
from components.training_config import TrainingConfig

FEATURE_KEYS = (F.USER_INDEX, F.ITEM_INDEX)


class MatrixFactorization(tf.keras.Model):
    def __init__(self, num_users: int, num_items: int, global_mean: float, config: TrainingConfig):
        super().__init__(name="mf")
        reg = tf.keras.regularizers.l2(config.l2)
        init = tf.keras.initializers.RandomNormal(stddev=0.05, seed=config.seed)
        self.num_items = num_items
        self.user_embedding = tf.keras.layers.Embedding(
            num_users, config.embedding_dim, embeddings_initializer=init, embeddings_regularizer=reg
        )
        self.item_embedding = tf.keras.layers.Embedding(
            num_items, config.embedding_dim, embeddings_initializer=init, embeddings_regularizer=reg
        )
        self.user_bias = tf.keras.layers.Embedding(num_users, 1, embeddings_initializer="zeros", embeddings_regularizer=reg)
        self.item_bias = tf.keras.layers.Embedding(num_items, 1, embeddings_initializer="zeros", embeddings_regularizer=reg)
        self.global_mean = tf.Variable(global_mean, dtype=tf.float32, name="global_mean")
        for layer in (self.user_embedding, self.item_embedding, self.user_bias, self.item_bias):
            layer.build((None,))  # score_all_items reads the tables before any call

    def call(self, inputs):
        users = tf.reshape(inputs[F.USER_INDEX], [-1])
        items = tf.reshape(inputs[F.ITEM_INDEX], [-1])
        dot = tf.reduce_sum(self.user_embedding(users) * self.item_embedding(items), axis=1)
        biases = tf.squeeze(self.user_bias(users), 1) + tf.squeeze(self.item_bias(items), 1)
        return self.global_mean + biases + dot

    def score_all_items(self, users, num_candidates: int):
        """Scores of the first `num_candidates` item indices for each user: [batch, num_candidates]."""
        user_vectors = self.user_embedding(users)
        item_vectors = self.item_embedding.embeddings[:num_candidates]
        item_bias = tf.reshape(self.item_bias.embeddings[:num_candidates], [1, -1])
        return (
            tf.matmul(user_vectors, item_vectors, transpose_b=True)
            + self.user_bias(users)
            + item_bias
            + self.global_mean
        )


def build(num_users: int, num_items: int, global_mean: float, config: TrainingConfig) -> tf.keras.Model:
    return MatrixFactorization(num_users, num_items, global_mean, config)
