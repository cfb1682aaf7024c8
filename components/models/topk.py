"""Top-k over the whole catalogue with a user's history removed: shared by `recommend` and validation.

The validation side is what ranking models early-stop and tune on: Recall@k of the validation split's
interactions, training items excluded (the same protocol the ranking gate applies to the eval split).
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from components.ranking_eval import top_k_indices

VALIDATION_K = 10
VALIDATION_METRIC = f"val_recall_at_{VALIDATION_K}"


def exclude_rows(scores: tf.Tensor, users: tf.Tensor, row_splits: tf.Tensor, items: tf.Tensor) -> tf.Tensor:
    """Scores with each user's items (ragged rows by user index) set to -inf: a sparse scatter."""
    rows = tf.gather(tf.RaggedTensor.from_row_splits(items, row_splits, validate=False), users)
    batch_rows = tf.repeat(tf.range(tf.shape(users, out_type=tf.int64)[0]), rows.row_lengths())
    indices = tf.stack([batch_rows, rows.flat_values], axis=1)
    return tf.tensor_scatter_nd_update(scores, indices, tf.fill([tf.shape(indices)[0]], float("-inf")))


class Holdout:
    """Held-out (user, item) index pairs and the training rows to exclude when ranking for them."""

    def __init__(self, pairs: np.ndarray, train_row_splits: np.ndarray, train_items: np.ndarray,
                 max_users: int = 2000, seed: int = 0):
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        self.pairs = pairs  # every held-out pair, for a model that refits on train + validation
        users = np.unique(pairs[:, 0])
        if len(users) > max_users:  # a fixed sample keeps an epoch's validation cost bounded
            users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
        self.users = users
        kept = pairs[np.isin(pairs[:, 0], users)]
        kept = kept[np.argsort(kept[:, 0], kind="stable")]
        starts, ends = np.searchsorted(kept[:, 0], users), np.searchsorted(kept[:, 0], users, side="right")
        self.relevant = {u: set(kept[s:e, 1].tolist()) for u, s, e in zip(users.tolist(), starts, ends)}
        self.row_splits, self.items = train_row_splits, train_items

    def __len__(self) -> int:
        return len(self.users)

    def recall(self, score_fn: Callable[[np.ndarray], np.ndarray], k: int = VALIDATION_K,
               batch: int = 256) -> float:
        """Mean Recall@k (hits / min(k, relevant)) of score_fn(user indices) -> [b, N] scores."""
        recalls = []
        for start in range(0, len(self.users), batch):
            users = self.users[start:start + batch]
            seen = [self.items[self.row_splits[u]:self.row_splits[u + 1]] if u + 1 < len(self.row_splits) else ()
                    for u in users]
            top = top_k_indices(score_fn(users), seen, k, ordered=False)
            for n, u in enumerate(users.tolist()):
                relevant = self.relevant[u]
                recalls.append(len(relevant.intersection(top[n].tolist())) / min(k, len(relevant)))
        return float(np.mean(recalls)) if recalls else 0.0


class ValidationRecall(tf.keras.callbacks.Callback):
    """Puts `val_recall_at_10` into each epoch's logs, for EarlyStopping (listed after it) to monitor."""

    def __init__(self, holdout: Holdout, score_fn: Callable[[np.ndarray], np.ndarray]):
        super().__init__()
        self.holdout, self.score_fn = holdout, score_fn

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        value = self.holdout.recall(self.score_fn)
        if logs is not None:
            logs[VALIDATION_METRIC] = value
        logging.info("epoch %d: %s %.4f over %d validation users", epoch + 1, VALIDATION_METRIC, value,
                     len(self.holdout))
        print(f"epoch {epoch + 1}: {VALIDATION_METRIC} {value:.4f}", flush=True)
