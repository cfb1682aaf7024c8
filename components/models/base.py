"""What every model shares: its table sizes, its initialisers, and all-pairs scoring for `recommend`."""

from __future__ import annotations

import dataclasses
from typing import Tuple

import tensorflow as tf

from components import features as F
from components.training_config import TrainingConfig


@dataclasses.dataclass(frozen=True)
class ModelDims:
    num_users: int  # vocabulary + OOV buckets
    num_items: int  # vocabulary + OOV buckets
    item_content_dim: int  # width of the item content vector (catalog.ContentLayout)
    global_mean: float
    user_content_dim: int = 1  # width of the user content vector (1 and all zeros without user attributes)
    # Implicit feedback with a weight column: the label is each interaction's strength, and ranking models that
    # can (two_tower) weigh its positive by it. False for ratings (a 1-star rating is not a weak purchase).
    weighted: bool = False


class RowL2Embedding(tf.keras.layers.Embedding):
    """An embedding whose L2 penalty covers only the rows a batch looks up, once per occurrence.

    While training, each call adds l2 * sum(rows^2) / batch to the loss: over an epoch an id is shrunk
    once per rating it appears in, as lambda does in SGD matrix factorisation, so the MSE + penalty
    objective is the same at any batch size. A whole-table regulariser instead shrinks every row at
    every step (rare and frequent ids alike, at a cost that grows with the vocabulary).
    """

    def __init__(self, input_dim: int, output_dim: int, l2: float = 0.0, **kwargs):
        super().__init__(input_dim, output_dim, **kwargs)
        self.l2 = float(l2)

    def call(self, inputs, training=None):
        rows = super().call(inputs)
        if self.l2 and training is not None and training is not False:
            batch = tf.cast(tf.maximum(tf.shape(inputs)[0], 1), rows.dtype)
            penalty = self.l2 * tf.reduce_sum(tf.square(rows)) / batch
            if not isinstance(training, bool):  # a symbolic learning phase
                penalty *= tf.cast(training, rows.dtype)
            self.add_loss(penalty)
        return rows

    def get_config(self):
        return {**super().get_config(), "l2": self.l2}


def id_table(layer: tf.keras.layers.Embedding, ids: str) -> tf.keras.layers.Embedding:
    """Marks `layer` as a table with one row per id of feature `ids` (F.USER_ID or F.ITEM_ID), in vocabulary
    order: warm start (components/warm_start.py) maps its rows to the next run's vocabulary by id."""
    layer.build((None,))  # score_all_items reads the table before any call
    layer.ids = ids
    return layer


def embedding(rows: int, config: TrainingConfig, dim: int = 0, *, ids: str) -> RowL2Embedding:
    """An id table of feature `ids`, regularised per looked-up row by `config.rating_l2` (see RowL2Embedding)."""
    return id_table(RowL2Embedding(
        rows, dim or config.embedding_dim, l2=config.rating_l2,
        embeddings_initializer=tf.keras.initializers.RandomNormal(stddev=0.05, seed=config.seed),
    ), ids)


def dense_stack(config: TrainingConfig):
    """Hidden layers; their kernels serve every example, so they get ordinary weight decay (dense_l2)."""
    reg = tf.keras.regularizers.l2(config.dense_l2)
    return [tf.keras.layers.Dense(units, activation="relu", kernel_regularizer=reg) for units in config.hidden_units]


class RatingHead(tf.keras.layers.Layer):
    """Dense stack (ReLU, dropout) to one rating, centred on the training split's global mean."""

    def __init__(self, config: TrainingConfig, global_mean: float, **kwargs):
        super().__init__(**kwargs)
        self.hidden = dense_stack(config)
        self.dropout = tf.keras.layers.Dropout(config.dropout, seed=config.seed)
        self.out = tf.keras.layers.Dense(1)
        self.global_mean = tf.Variable(global_mean, dtype=tf.float32, trainable=False, name="global_mean")

    def call(self, x, training=False):
        for layer in self.hidden:
            x = self.dropout(layer(x), training=training)
        return tf.squeeze(self.out(x), -1) + self.global_mean


def all_pairs(user_vectors: tf.Tensor, item_vectors: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """Row b*N+i pairs user b with item i: [B*N, Du] and [B*N, Di]."""
    batch, n = tf.shape(user_vectors)[0], tf.shape(item_vectors)[0]
    return tf.repeat(user_vectors, n, axis=0), tf.tile(item_vectors, [batch, 1])


def content_features(inputs) -> tf.Tensor:
    """An item's declared attributes as one vector (catalog.encode_content)."""
    return inputs[F.ITEM_CONTENT]


def user_features(inputs, users: tf.Tensor) -> tf.Tensor:
    """A user's declared attributes as one vector; zeros when the inputs carry none."""
    if F.USER_CONTENT in inputs:
        return inputs[F.USER_CONTENT]
    return tf.zeros([tf.shape(users)[0], 1])
