"""iALS (Hu, Koren & Volinsky 2008): implicit-feedback matrix factorisation for catalogues EASE cannot hold.

Every user x item cell is a target: 1 with confidence `alpha` for an interaction, 0 with confidence 1 for
everything else, fitted by alternating least squares with L2 `regularization` (the `implicit` library's
solver, multi-threaded C++). Memory grows with (users + items) x factors, not items², so it scales to
catalogues of millions of items; Rendle et al. (2022) show that tuned iALS matches EASE-class models on the
large public benchmarks.

History is an input, as for the other ranking models: the model keeps only the item factors Y and scores a
user by *folding in* their history h (one least-squares solve of `factors` unknowns, the same one training
makes): x = (YᵀY + λI + Σ_{i∈h} (c_i − 1) y_i y_iᵀ)⁻¹ Σ_{i∈h} c_i y_i with c_i = alpha · weight_i. A known
user's stored history, a session, or a user plus fresh interactions are all scored alike, with no per-user
parameter to retrain.

Tuning: alpha and the regularisation are chosen on the validation split's Recall@10 by a coordinate search
(alpha first, with the regularisation a fixed multiple of it: a larger confidence needs proportionally more
shrinkage; then the regularisation at that alpha), each a walk along a geometric grid that goes on while
validation improves, since the best values move with the data's size and density. Big training sets are
searched on a sample of users; the chosen values are then refitted on train + validation, as EASE does.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf
from scipy import sparse

from components import catalog as catalog_lib
from components import features as F
from components.models import freshness
from components.models import history as history_lib
from components.models.base import ModelDims
from components.models.topk import Holdout
from components.training_config import TrainingConfig

# Search starts (alpha: an observed interaction's confidence, 1 for an unobserved cell; the regularisation as a
# multiple of alpha) and the factor between neighbouring trials. The best value depends on the data's size and
# density, so the search walks away from the start while validation improves (up to MAX_STEPS each way). A
# step of 2 (16x each way): on the 100,000-item synthetic eval Recall@10 moved 0.187 -> 0.208 between
# neighbouring trials a factor 2 apart (alpha 10 with regularisation 400 and 200), so a step of 4 skipped the best.
ALPHA_START, REGULARIZATION_PER_ALPHA_START, STEP, MAX_STEPS = 20.0, 10.0, 2.0, 4
# Above this many training interactions the search fits a sample of the users' rows (every item kept).
SEARCH_MAX_INTERACTIONS = 2_000_000


class Ials(tf.keras.Model):
    PREDICTS_RATINGS = False  # predict / serving_default answer a ranking score

    def __init__(self, item_factors: np.ndarray, regularization: float, alpha: float, row_splits: np.ndarray,
                 history: np.ndarray, fresh_weight: float = 1.0):
        super().__init__(name="ials")
        factors = np.asarray(item_factors, np.float32)
        self.item_factors = tf.Variable(factors, trainable=False, name="item_factors")  # [catalogue, factors]
        # YᵀY + λI: the part of every user's system that does not depend on their history, computed once.
        gram = factors.astype(np.float64).T @ factors.astype(np.float64) + regularization * np.eye(factors.shape[1])
        self.base_system = tf.Variable(gram.astype(np.float32), trainable=False, name="base_system")
        self.alpha = tf.Variable(float(alpha), trainable=False, name="alpha")
        self.regularization = float(regularization)
        self.ials_regularization = tf.Variable(float(regularization), trainable=False, name="ials_regularization")
        self.fresh_weight = tf.Variable(float(fresh_weight), trainable=False, name="fresh_weight")
        counts = np.bincount(history, minlength=factors.shape[0]).astype(np.float32)
        self.popularity = tf.Variable(counts / max(1.0, counts.max()), trainable=False, name="item_popularity")
        self.store_history(row_splits, history)

    @property
    def num_catalogue_items(self) -> tf.Tensor:
        return tf.shape(self.item_factors, out_type=tf.int64)[0]

    def store_history(self, row_splits: np.ndarray, items: np.ndarray) -> None:
        """Score known users from these rows from now on (the Trainer passes every split before export)."""
        self.history_row_splits = tf.Variable(row_splits, trainable=False, name="history_row_splits")
        self.history_items = tf.Variable(items, trainable=False, name="history_items")

    def stored_history(self, users: tf.Tensor) -> tf.SparseTensor:
        return history_lib.stored(users, self.history_row_splits, self.history_items, self.num_catalogue_items)

    def user_vectors_from_history(self, history: tf.SparseTensor) -> tf.Tensor:
        """[rows, factors]: each row's least-squares user vector given the item factors (zeros for an empty row)."""
        rows = history.indices[:, 0]
        num_rows = history.dense_shape[0]
        vectors = tf.gather(self.item_factors, history.indices[:, 1])  # [nnz, f]
        confidence = self.alpha * history.values
        rhs = tf.math.unsorted_segment_sum(confidence[:, None] * vectors, rows, num_rows)  # Σ c y
        # Σ (c - 1) y yᵀ per row as one batched product of padded [rows, longest, f] blocks: memory grows with
        # the longest history in the batch, not with f² per interaction.
        padded = tf.RaggedTensor.from_value_rowids(vectors, rows, nrows=num_rows, validate=False).to_tensor()
        scaled = tf.RaggedTensor.from_value_rowids((confidence - 1.0)[:, None] * vectors, rows, nrows=num_rows,
                                                   validate=False).to_tensor()
        system = self.base_system[None] + tf.einsum("bld,ble->bde", padded, scaled)
        return tf.linalg.solve(system, rhs[:, :, None])[:, :, 0]

    def score_history(self, history: tf.SparseTensor, users=None, user_content=None, item_vectors=None) -> tf.Tensor:
        """[rows, catalogue]: the folded-in user vectors against every item's factors."""
        return tf.matmul(self.user_vectors_from_history(history), self.item_factors, transpose_b=True)

    def _scores(self, users: tf.Tensor) -> tf.Tensor:
        """[batch, catalogue] from the stored history; popularity for a user without one."""
        history = self.stored_history(users)
        scores = self.score_history(history)
        return tf.where((history_lib.lengths(history) > 0)[:, None], scores, self.popularity[None, :])

    def call(self, inputs, training: bool = False) -> tf.Tensor:
        """The score of each (user, item) row: one dot product per row, not the catalogue; popularity for a user
        without history (as `_scores`), 0 for an unknown item."""
        items = tf.cast(tf.reshape(inputs[F.ITEM_INDEX], [-1]), tf.int64)
        known = items < self.num_catalogue_items
        safe = tf.minimum(items, self.num_catalogue_items - 1)
        history = self.stored_history(inputs[F.USER_INDEX])
        picked = tf.reduce_sum(self.user_vectors_from_history(history) * tf.gather(self.item_factors, safe), axis=1)
        picked = tf.where(history_lib.lengths(history) > 0, picked, tf.gather(self.popularity, safe))
        return tf.where(known, picked, tf.zeros_like(picked))

    def score_all_items(self, users, items, **unused) -> tf.Tensor:
        return tf.gather(self._scores(users), items[F.ITEM_INDEX], axis=1)

    def query_vectors(self, history: tf.SparseTensor, users=None, user_content=None) -> tf.Tensor:
        """What an approximate index is asked with (components/ann.py): a dot product with retrieval_vectors."""
        return self.user_vectors_from_history(history)

    def retrieval_vectors(self, items) -> tf.Tensor:
        return tf.gather(self.item_factors, items[F.ITEM_INDEX])

    def similarity_vectors(self, items) -> tf.Tensor:
        return tf.gather(self.item_factors, items[F.ITEM_INDEX])


def _fit(matrix: sparse.csr_matrix, factors: int, regularization: float, alpha: float, iterations: int,
         seed: int, initial: np.ndarray = None) -> np.ndarray:
    """Item factors [items, factors] of implicit's ALS on a binary user x item matrix, from `initial` item factors
    when given (a warm start: the first sweep solves the users from them)."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits  # a dependency of implicit

    with threadpool_limits(1, "blas"):  # implicit parallelises itself; a BLAS pool on top slows it down
        model = AlternatingLeastSquares(factors=factors, regularization=regularization, alpha=alpha,
                                        iterations=iterations, random_state=seed)
        if initial is not None:
            model.item_factors = np.ascontiguousarray(initial, np.float32)
        model.fit(matrix, show_progress=False)
    return np.asarray(model.item_factors, np.float32)


def _binary(pairs: np.ndarray, num_users: int, num_items: int) -> sparse.csr_matrix:
    matrix = sparse.csr_matrix((np.ones(len(pairs), np.float32), (pairs[:, 0], pairs[:, 1])),
                               shape=(num_users, num_items))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def _search_rows(matrix: sparse.csr_matrix, holdout: Holdout, seed: int) -> sparse.csr_matrix:
    """The rows the search fits: all, or (a big split) the validation users' rows plus a random share of the rest."""
    if matrix.nnz <= SEARCH_MAX_INTERACTIONS:
        return matrix
    share = SEARCH_MAX_INTERACTIONS / matrix.nnz
    keep = np.random.default_rng(seed).random(matrix.shape[0]) < share
    keep[holdout.users] = True
    return sparse.diags(keep.astype(np.float32)) @ matrix  # dropped rows empty, indices unchanged


def _walk(start: float, trial: Callable[[float], float]) -> float:
    """The value with the best trial on a geometric line through `start`: both neighbours first, then further
    in the better direction while it improves."""
    best = max((start / STEP, start, start * STEP), key=lambda v: (trial(v), v == start))
    if best == start:
        return best
    direction = STEP if best > start else 1 / STEP
    for _ in range(MAX_STEPS - 1):
        further = best * direction
        if trial(further) <= trial(best):
            break
        best = further
    return best


def search(matrix: sparse.csr_matrix, config: TrainingConfig, score: Callable[[np.ndarray, float, float], float],
           ) -> Tuple[float, float, float]:
    """(alpha, regularization, validation Recall@10): alpha at the starting ratio, then the regularisation at that
    alpha (a value the config fixes is not searched)."""
    fits: Dict[Tuple[float, float], float] = {}

    def trial(alpha: float, regularization: float) -> float:
        key = (round(alpha, 6), round(regularization, 6))
        if key not in fits:
            started = time.time()
            fits[key] = score(_fit(matrix, config.ials_factors, regularization, alpha, config.ials_iterations,
                                   config.seed), regularization, alpha)
            print(f"ials: alpha {alpha:g}, regularization {regularization:g}: validation Recall@10 "
                  f"{fits[key]:.4f} ({time.time() - started:.1f} s)", flush=True)
        return fits[key]

    fixed_regularization = config.ials_regularization

    def regularization_of(alpha: float) -> float:
        return fixed_regularization or alpha * REGULARIZATION_PER_ALPHA_START

    alpha = config.ials_alpha or _walk(ALPHA_START, lambda a: trial(a, regularization_of(a)))
    regularization = fixed_regularization or _walk(regularization_of(alpha), lambda r: trial(alpha, r))
    return alpha, regularization, trial(alpha, regularization)


def train(dims: ModelDims, config: TrainingConfig, items: catalog_lib.Catalog, train_data, holdout: Holdout,
          steps_per_epoch=None, callbacks=(), initial_item_factors: np.ndarray = None) -> Ials:
    """Alpha and the regularisation on validation, then item factors refitted on train + validation. With
    `initial_item_factors` (a warm start), every fit starts from them and sweeps ials_warm_iterations times."""
    iterations = config.ials_warm_iterations if initial_item_factors is not None else config.ials_iterations
    num_items = len(items.item_ids)
    pairs = items.train_pairs
    matrix = _binary(pairs, dims.num_users, num_items)

    def validation_recall(factors: np.ndarray, regularization: float, alpha: float) -> float:
        if not len(holdout):
            return 0.0
        model = Ials(factors, regularization, alpha, items.rated_row_splits, items.rated_items)
        return holdout.recall(lambda users: model.score_all_items(
            tf.constant(users, tf.int64), {F.ITEM_INDEX: tf.range(num_items, dtype=tf.int64)}).numpy())

    fixed = config.ials_alpha > 0 and config.ials_regularization > 0
    if len(holdout) and not fixed:
        alpha, regularization, best = search(_search_rows(matrix, holdout, config.seed), config, validation_recall)
    else:
        alpha = config.ials_alpha or ALPHA_START
        regularization = config.ials_regularization or alpha * REGULARIZATION_PER_ALPHA_START
        best = None
    refit = config.ials_refit and len(holdout.pairs)
    if fixed and config.fresh_weight and refit and initial_item_factors is not None:
        # A warm start with everything kept: one family is trained (warm_start.candidates), so no validation recall
        # is compared, and the fit on train alone would be thrown away for the refit.
        print(f"ials: no fit on train alone (alpha {alpha:g}, regularization {regularization:g} and fresh weight "
              f"{config.fresh_weight:g} kept)", flush=True)
        return _refit(dims, config, items, holdout, alpha, regularization, config.fresh_weight, iterations,
                      initial_item_factors, recall=0.0)
    factors = _fit(matrix, config.ials_factors, regularization, alpha, iterations, config.seed, initial_item_factors)
    model = Ials(factors, regularization, alpha, items.rated_row_splits, items.rated_items)
    if best is None:  # given, not searched: measured all the same, for `auto` to compare candidates by
        best = validation_recall(factors, regularization, alpha)
    model.validation_recall = best  # what `auto` compares candidates by (0 without a validation split)
    # Before the refit, which fits validation too: fresh interactions' weight measured on validation.
    fresh = config.fresh_weight or freshness.tune(
        lambda history, users: model.score_history(history).numpy(), items.rated_row_splits, items.rated_items,
        holdout.pairs, num_items, seed=config.seed)
    if not refit:
        model.fresh_weight.assign(fresh)
        return model
    return _refit(dims, config, items, holdout, alpha, regularization, fresh, iterations, initial_item_factors,
                  model.validation_recall)


def _refit(dims: ModelDims, config: TrainingConfig, items: catalog_lib.Catalog, holdout: Holdout, alpha: float,
           regularization: float, fresh: float, iterations: int, initial_item_factors, recall: float) -> Ials:
    """Item factors fitted on train + validation (the chosen alpha and regularisation), scoring from both."""
    both = np.concatenate([items.train_pairs, holdout.pairs])
    row_splits, history = catalog_lib.ragged_rows(both, dims.num_users)
    print(f"ials: refit on train + validation ({len(history)} interactions), alpha {alpha:g}, "
          f"regularization {regularization:g}, {config.ials_factors} factors", flush=True)
    refit = Ials(_fit(_binary(both, dims.num_users, len(items.item_ids)), config.ials_factors, regularization, alpha,
                      iterations, config.seed, initial_item_factors), regularization, alpha, row_splits, history, fresh)
    refit.validation_recall = recall  # measured before the refit, which saw validation
    logging.info("ials: alpha %g, regularization %g, validation Recall@10 %.4f", alpha, regularization, recall)
    return refit
