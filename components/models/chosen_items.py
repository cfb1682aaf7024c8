"""SVD++'s implicit term for the rating models: a user is also the items they chose to rate.

Koren (2008): user vector = p_u + |N(u)|^-1/2 * sum of y_j over the items j in N(u), the items u
interacted with. Which items a user rated carries signal the rating values do not (someone who rates
many horror films tells you something before any star), and a user with few ratings of their own
borrows it from the y vectors of what they chose. N(u) is the stored history the rating model was
fitted on (rows by user index, saved with the model); a user with none (unknown, OOV) gets zeros.

Training samples at most `rating_history_sample` items of a long history per example and rescales,
so a batch costs a bounded number of lookups whatever the heaviest user's history; serving sums the
whole history. The y rows are penalised per lookup and per example, as SGD SVD++ shrinks y_j at
every rating of every user who has j in N(u) (Surprise's SVDpp), with the rating models' L2.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import tensorflow as tf

from components import features as F
from components.models import history as history_lib
from components.models.base import embedding
from components.training_config import (RATING_HISTORY_AUTO, RATING_HISTORY_CHOICES, RATING_HISTORY_OFF,
                                        TrainingConfig)

Rows = Tuple[np.ndarray, np.ndarray]  # (row_splits [num_users + 1], items): ragged history rows by user index


class ChosenItems(tf.keras.layers.Layer):
    """[batch, d]: |N(u)|^-1/2 * sum of y_j over each user's stored history N(u)."""

    def __init__(self, num_items: int, config: TrainingConfig, rows: Rows, **kwargs):
        super().__init__(name="chosen_items", **kwargs)
        row_splits, items = rows
        self.item_embedding = embedding(num_items, config, ids=F.ITEM_ID)  # y_j; the penalty is added here, per example
        self.l2 = float(config.rating_l2)
        self.sample = max(1, int(config.rating_history_sample))
        self.row_splits = tf.Variable(np.asarray(row_splits, np.int64), trainable=False, name="row_splits")
        self.items = tf.Variable(np.asarray(items, np.int64), trainable=False, name="items")

    def call(self, users: tf.Tensor, training=None) -> tf.Tensor:
        users = tf.reshape(users, [-1])
        unique, position, count = tf.unique_with_counts(users)  # each user's history once per batch
        rows = history_lib.from_ragged(unique, self.row_splits, self.items)
        num_unique = tf.shape(unique)[0]
        lengths = tf.cast(rows.row_lengths(), tf.float32)
        if training:  # a random subset of a long history, rescaled below to estimate the whole sum
            share = tf.minimum(1.0, self.sample / tf.maximum(lengths, 1.0))
            keep = tf.random.uniform(tf.shape(rows.flat_values)) < tf.gather(share, rows.value_rowids())
            rows = tf.ragged.boolean_mask(rows, rows.with_flat_values(keep))
        kept = tf.cast(rows.row_lengths(), tf.float32)
        scale = lengths / tf.maximum(kept, 1.0)  # 1 unless sampled
        vectors = tf.gather(self.item_embedding.embeddings, rows.flat_values)
        sums = tf.math.unsorted_segment_sum(vectors, rows.value_rowids(), num_unique)
        if training and self.l2:  # per example: a user's rows count once for each of their examples in the batch
            per_row = tf.math.unsorted_segment_sum(tf.reduce_sum(tf.square(vectors), 1), rows.value_rowids(),
                                                   num_unique)
            weight = scale * tf.cast(count, tf.float32)
            self.add_loss(self.l2 * tf.reduce_sum(per_row * weight) / tf.cast(tf.maximum(tf.size(users), 1), tf.float32))
        return tf.gather(sums * (scale * tf.math.rsqrt(tf.maximum(lengths, 1.0)))[:, None], position)


def layer(num_items: int, config: TrainingConfig, rows: Optional[Rows]) -> Optional[ChosenItems]:
    """The implicit term, or None (the seeds' form): `on` needs `rows`; `auto` (undecided: the Trainer and the Tuner
    decide it on validation before building) means on exactly when history rows are given."""
    if config.rating_history not in RATING_HISTORY_CHOICES:
        raise ValueError(f"unknown rating_history {config.rating_history!r}; choose one of: "
                         f"{', '.join(RATING_HISTORY_CHOICES)}")
    if config.rating_history == RATING_HISTORY_OFF or (config.rating_history == RATING_HISTORY_AUTO and rows is None):
        return None
    if rows is None:
        raise ValueError("rating_history 'on' needs the users' history rows to build the model")
    return ChosenItems(num_items, config, rows)
