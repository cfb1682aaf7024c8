"""Collaborative MLP (NCF style): user and item embeddings, concatenated, through a Dense stack.

Unlike MF it can learn non-linear user-item interactions; the rating is still centred on the
global mean so training starts from the baseline rather than from zero.
"""

import tensorflow as tf

from components import features as F
from components.training_config import TrainingConfig

FEATURE_KEYS = (F.USER_INDEX, F.ITEM_INDEX)


class CollaborativeMLP(tf.keras.Model):
    def __init__(self, num_users: int, num_items: int, global_mean: float, config: TrainingConfig):
        super().__init__(name="mlp")
        reg = tf.keras.regularizers.l2(config.l2)
        init = tf.keras.initializers.RandomNormal(stddev=0.05, seed=config.seed)
        self.user_embedding = tf.keras.layers.Embedding(
            num_users, config.embedding_dim, embeddings_initializer=init, embeddings_regularizer=reg
        )
        self.item_embedding = tf.keras.layers.Embedding(
            num_items, config.embedding_dim, embeddings_initializer=init, embeddings_regularizer=reg
        )
        self.hidden = [
            tf.keras.layers.Dense(units, activation="relu", kernel_regularizer=reg) for units in config.hidden_units
        ]
        self.dropout = tf.keras.layers.Dropout(config.dropout, seed=config.seed)
        self.out = tf.keras.layers.Dense(1)
        self.global_mean = tf.Variable(global_mean, dtype=tf.float32, trainable=False, name="global_mean")
        self.user_embedding.build((None,))
        self.item_embedding.build((None,))

    def _rate(self, user_vectors, item_vectors, training=False):
        x = tf.concat([user_vectors, item_vectors], axis=-1)
        for layer in self.hidden:
            x = self.dropout(layer(x), training=training)
        return tf.squeeze(self.out(x), -1) + self.global_mean

    def call(self, inputs, training=False):
        users = tf.reshape(inputs[F.USER_INDEX], [-1])
        items = tf.reshape(inputs[F.ITEM_INDEX], [-1])
        return self._rate(self.user_embedding(users), self.item_embedding(items), training)

    def score_all_items(self, users, num_candidates):
        """[batch, num_candidates]: every (user, item) pair through the MLP in one batched call."""
        user_vectors = self.user_embedding(users)  # [B, D]
        item_vectors = self.item_embedding.embeddings[:num_candidates]  # [N, D]
        batch, n = tf.shape(user_vectors)[0], tf.shape(item_vectors)[0]
        pairs_u = tf.repeat(user_vectors, n, axis=0)
        pairs_i = tf.tile(item_vectors, [batch, 1])
        return tf.reshape(self._rate(pairs_u, pairs_i), [batch, n])


def build(num_users: int, num_items: int, global_mean: float, config: TrainingConfig) -> tf.keras.Model:
    return CollaborativeMLP(num_users, num_items, global_mean, config)
