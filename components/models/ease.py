"""EASE (Steck 2019): a closed-form item-to-item model of implicit feedback.

B = I - P / diag(P) with P = (X^T X + lambda I)^-1 over the binary user x item matrix X of the
training split, diagonal zero; a user's scores are their training history times B. No epochs: the
only hyperparameter, lambda, is chosen on the validation split's Recall@10 from a grid that scales
with the data (multiples of the mean item count), unless the config fixes it; then B is refitted on
train + validation (`ease_refit`). History is an input: `score_history` scores any item history (a
known user's stored one, which the Trainer sets to every split the pipeline saw, or a session's).

Size limit: B is a dense items x items float32 matrix, computed in float64 (an inverse of
O(items^3) time) and saved with the model, so the catalogue is capped (`TrainingConfig.ease_max_items`,
default 10,000 items: 400 MB in the SavedModel); above it, use `ials` or `two_tower`.
"""

from __future__ import annotations

import concurrent.futures
import logging
from typing import Union

import numpy as np
import tensorflow as tf
from scipy import sparse

from components import catalog as catalog_lib
from components import features as F
from components.models import freshness
from components.models import history as history_lib
from components.models.base import ModelDims
from components.models.topk import Holdout
from components.ranking_eval import ease_weights
from components.training_config import TrainingConfig

LAMBDA_GRID = (1.0, 3.0, 10.0, 30.0)  # times the mean number of interactions per item
# Above this many items one inverse takes minutes on a laptop: lambda is not searched, the middle
# of the grid is used.
GRID_SEARCH_MAX_ITEMS = 4000


# train(background=True): the final solve runs on a thread (components/models/__init__.py, solves_in_background).
SOLVES_IN_BACKGROUND = True
# ...up to this many items. Above it a solve on one BLAS thread loses more against two than the ~2 s of tracing it
# overlaps (2 cores: 4,000 items 3.2 s against 2.2 s; 6,000 items 10.0 s against 7.4 s), and its zero placeholder
# costs items^2 x 4 bytes meanwhile (400 MB at 10K items): it is solved in line, on every BLAS thread.
BACKGROUND_SOLVE_MAX_ITEMS = 4000


class CatalogueTooLarge(ValueError):
    """The item vocabulary does not fit EASE's dense item x item matrix."""


class PendingWeights:
    """B being solved on a thread of its own: numpy's inverse releases the GIL, so the Trainer traces the signatures
    (Python, ~2 s) meanwhile, and the model's variable is set before it is saved (Ease.finish_fitting)."""

    def __init__(self, matrix: sparse.spmatrix, lam: float):
        self.shape = (matrix.shape[1], matrix.shape[1])
        executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ease-solve")
        self._future = executor.submit(self._solve, matrix, lam)
        executor.shutdown(wait=False)

    @staticmethod
    def _solve(matrix: sparse.spmatrix, lam: float) -> np.ndarray:
        # One BLAS thread: the other core is the tracing's. With both, the two slowed each other down as much as the
        # overlap saved.
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            return ease_weights(matrix, lam)

    def result(self) -> np.ndarray:
        return self._future.result()


class Ease(tf.keras.Model):
    PREDICTS_RATINGS = False  # predict / serving_default answer a ranking score

    def __init__(self, weights: Union[np.ndarray, PendingWeights], row_splits: np.ndarray, history: np.ndarray,
                 lam: float, fresh_weight: float = 1.0, lambda_scale: float = 0.0):
        super().__init__(name="ease")
        # A request's fresh interactions weigh this much against the stored history (components/models/freshness.py).
        self.fresh_weight = tf.Variable(float(fresh_weight), trainable=False, name="fresh_weight")
        pending = isinstance(weights, PendingWeights)
        self.weights_matrix = tf.Variable(tf.zeros(weights.shape) if pending else weights, trainable=False,
                                          name="ease_weights")
        self._pending = weights if pending else None
        # What a user without history (a new user, an empty session) is ranked by: the items' training counts.
        counts = np.bincount(history, minlength=weights.shape[0]).astype(np.float32)
        self.popularity = tf.Variable(counts / max(1.0, counts.max()), trainable=False, name="item_popularity")
        # The stored history each known user is scored from (the Trainer stores every split at export).
        self.history_row_splits = tf.Variable(row_splits, trainable=False, name="history_row_splits")
        self.history_items = tf.Variable(history, trainable=False, name="history_items")
        self.lam = lam
        # lambda per mean interactions per item: what the next run's warm start keeps (components/warm_start.py).
        self.ease_lambda_scale = tf.Variable(float(lambda_scale), trainable=False, name="ease_lambda_scale")

    def finish_fitting(self) -> None:
        """Waits for B when it is being solved in the background (train(background=True)) and sets it. Signatures may
        be traced before (they read the variable when called); anything that scores eagerly waits first."""
        if self._pending is not None:
            self.weights_matrix.assign(self._pending.result())
            self._pending = None

    @property
    def num_catalogue_items(self) -> tf.Tensor:
        return tf.shape(self.weights_matrix, out_type=tf.int64)[0]

    def stored_history(self, users: tf.Tensor) -> tf.SparseTensor:
        """[batch, catalogue] binary rows of the users' stored history (empty for an unknown user)."""
        return history_lib.stored(users, self.history_row_splits, self.history_items, self.num_catalogue_items)

    def score_history(self, history: tf.SparseTensor, users=None, user_content=None, item_vectors=None) -> tf.Tensor:
        """[batch, catalogue]: history x B (an item-to-item model: any history, a known user's or a session's)."""
        if tf.executing_eagerly():
            self.finish_fitting()
        return tf.sparse.sparse_dense_matmul(history, self.weights_matrix)

    def _scores(self, users: tf.Tensor) -> tf.Tensor:
        """[batch, catalogue] scores, plus a column of zeros for the OOV item; popularity for an empty history."""
        history = self.stored_history(users)
        scores = self.score_history(history)
        has_history = history_lib.lengths(history) > 0
        scores = tf.where(has_history[:, None], scores, self.popularity[None, :])
        return tf.pad(scores, [[0, 0], [0, F.OOV_BUCKETS]])

    def call(self, inputs, training: bool = False) -> tf.Tensor:
        items = tf.reshape(tf.cast(inputs[F.ITEM_INDEX], tf.int64), [-1, 1])
        return tf.squeeze(tf.gather(self._scores(inputs[F.USER_INDEX]), items, batch_dims=1), 1)

    def score_all_items(self, users, items) -> tf.Tensor:
        return tf.gather(self._scores(users), items[F.ITEM_INDEX], axis=1)

    def similar_item_scores(self, item_index: tf.Tensor) -> tf.Tensor:
        """[batch, catalogue]: the scores of a user whose whole history is that one item."""
        if tf.executing_eagerly():
            self.finish_fitting()
        n = tf.shape(self.weights_matrix, out_type=tf.int64)[0]
        known = tf.cast(item_index < n, tf.float32)[:, None]
        return tf.gather(self.weights_matrix, tf.minimum(item_index, n - 1)) * known

    def store_history(self, row_splits: np.ndarray, items: np.ndarray) -> None:
        """Score known users from these rows from now on (the Trainer passes every split before export)."""
        self.history_row_splits = tf.Variable(row_splits, trainable=False, name="history_row_splits")
        self.history_items = tf.Variable(items, trainable=False, name="history_items")


def check_size(num_items: int, limit: int) -> None:
    if num_items > limit:
        raise CatalogueTooLarge(
            f"ease: the catalogue has {num_items} items, above its limit of {limit} (a dense items x items "
            f"matrix of {4 * num_items ** 2 / 2**30:.1f} GiB); use --model ials or --model two_tower, or raise "
            f"--ease-max-items if the machine has the memory")


def train(dims: ModelDims, config: TrainingConfig, items: catalog_lib.Catalog, train_data, holdout: Holdout,
          steps_per_epoch=None, callbacks=(), background: bool = False) -> Ease:
    """Closed form on the training split; lambda from the grid by validation Recall@10. `background`: the refit's
    solve (the last) runs on a thread; the caller calls the model's finish_fitting() before saving it."""
    num_items = len(items.item_ids)
    check_size(num_items, config.ease_max_items)
    pairs = items.train_pairs
    mean_count = max(1.0, len(pairs) / max(1, num_items))
    if config.ease_lambda > 0:
        grid = [config.ease_lambda]
    elif config.ease_lambda_scale > 0:  # the latest blessed model's choice (warm start), at this window's size
        grid = [mean_count * config.ease_lambda_scale]
    elif num_items > GRID_SEARCH_MAX_ITEMS or not len(holdout):
        grid = [mean_count * LAMBDA_GRID[len(LAMBDA_GRID) // 2]]
    else:
        grid = [mean_count * m for m in LAMBDA_GRID]
    if len(grid) == 1 and config.fresh_weight and config.ease_refit and len(holdout.pairs):
        # Nothing to choose (the lambda and the fresh weight given, a warm start's kept ones) and EASE never competes
        # with another candidate: the solve on train alone would only print a validation recall. Refit directly.
        lam = grid[0]
        print(f"ease: lambda {lam:.1f} and fresh weight {config.fresh_weight:g} kept: no validation solve", flush=True)
        return _refit(dims, items, holdout, lam, config.fresh_weight, mean_count, recall=0.0, background=background)
    matrix = sparse.csr_matrix((np.ones(len(pairs), np.float32), (pairs[:, 0], pairs[:, 1])),
                               shape=(dims.num_users, num_items))
    best = None
    for lam in grid:
        weights = ease_weights(matrix, lam)
        recall = holdout.recall(lambda users: np.asarray(matrix[users] @ weights)) if len(holdout) else 0.0
        logging.info("ease: lambda %.1f, validation Recall@10 %.4f", lam, recall)
        print(f"ease: lambda {lam:.1f}: validation Recall@10 {recall:.4f}", flush=True)
        if best is None or recall > best[0]:
            best = (recall, lam, weights)
    recall, lam, weights = best
    # Before the refit, which fits validation too: fresh interactions' weight measured on validation.
    fresh = config.fresh_weight or freshness.tune(
        lambda history, users: np.asarray(_to_scipy(history) @ weights), items.rated_row_splits, items.rated_items,
        holdout.pairs, num_items, seed=config.seed)
    if not config.ease_refit or not len(holdout.pairs):
        model = Ease(weights, items.rated_row_splits, items.rated_items, lam, fresh, lam / mean_count)
        model.validation_recall = recall
        return model
    return _refit(dims, items, holdout, lam, fresh, mean_count, recall, background)


def _refit(dims: ModelDims, items: catalog_lib.Catalog, holdout: Holdout, lam: float, fresh: float,
           mean_count: float, recall: float, background: bool = False) -> Ease:
    """lambda chosen, the validation interactions are data like any other: B refitted on train + validation, scoring
    from both (the eval split, which the gate reports on, stays unseen)."""
    num_items = len(items.item_ids)
    row_splits, history = catalog_lib.ragged_rows(np.concatenate([items.train_pairs, holdout.pairs]), dims.num_users)
    matrix = sparse.csr_matrix((np.ones(len(history), np.float32),
                                (np.repeat(np.arange(dims.num_users), np.diff(row_splits)), history)),
                               shape=(dims.num_users, num_items))
    print(f"ease: refit on train + validation ({len(history)} interactions), lambda {lam:.1f}", flush=True)
    background = background and num_items <= BACKGROUND_SOLVE_MAX_ITEMS
    weights = PendingWeights(matrix, lam) if background else ease_weights(matrix, lam)
    model = Ease(weights, row_splits, history, lam, fresh, lam / mean_count)
    model.validation_recall = recall  # before the refit, which saw validation
    return model


def _to_scipy(history: tf.SparseTensor) -> sparse.csr_matrix:
    indices = history.indices.numpy()
    return sparse.csr_matrix((history.values.numpy(), (indices[:, 0], indices[:, 1])),
                             shape=tuple(history.dense_shape.numpy()))
