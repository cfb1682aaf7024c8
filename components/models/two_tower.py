"""Two-tower retrieval trained on implicit feedback with TensorFlow Recommenders; the user tower reads history.

Every interaction is a positive; the other items of the batch are the negatives (in-batch sampled
softmax, `tfrs.tasks.Retrieval`), corrected by each item's sampling probability (logQ) so popular
items are not pushed down merely for appearing as negatives more often, and with accidental hits
(the same item twice in a batch) removed.

The user tower is a history tower (YouTube-DNN style): the mean of the embeddings of the items the user
interacted with (a table of its own, the "input" side of each item), plus the user's projected attributes
when the data declares any, plus an id embedding only with `two_tower_user_id`. So the model scores any
history: a known user's stored one (every split the pipeline saw, once exported), the same user with
interactions newer than the run, or an anonymous session, with no per-user parameter to retrain. While
training, each example's history is the user's training items without the example's own item (else the
target would be in its own input), sampled down to `two_tower_history_sample` items.

The item tower adds the item's projected attributes to its id embedding, plus a learned item bias carried
as one more dimension (user side 1). A user with neither history nor attributes is ranked by popularity.
`recommend` is one sparse product (history x input embeddings) and one matrix product against the item
vectors computed at export.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from components import catalog as catalog_lib
from components import features as F
from components.models import freshness
from components.models import history as history_lib
from components.models.base import ModelDims, content_features, id_table, user_features
from components.models.topk import VALIDATION_METRIC, Holdout, ValidationRecall
from components.training_config import TrainingConfig

READS_EXAMPLES = True  # trains on the Trainer's tf.data stream of examples (models.reads_examples)


def _table(rows: int, dim: int, seed: int, name: str, ids: str) -> tf.keras.layers.Embedding:
    return id_table(tf.keras.layers.Embedding(
        rows, dim, embeddings_initializer=tf.keras.initializers.RandomNormal(stddev=0.05, seed=seed), name=name), ids)


class _TrainingRows:
    """The training split's rows each example's history is drawn from while fitting. A plain object, so Keras
    does not track (and the SavedModel does not carry) a second copy of the history."""

    def __init__(self, row_splits: np.ndarray, items: np.ndarray):
        self.row_splits = tf.constant(row_splits, tf.int64)
        self.items = tf.constant(items, tf.int64)


class TwoTower(tfrs.Model):
    PREDICTS_RATINGS = False  # predict / serving_default answer a ranking score
    USES_USER_CONTENT = True

    def __init__(self, dims: ModelDims, config: TrainingConfig, item_probability: np.ndarray,
                 row_splits: np.ndarray, items: np.ndarray):
        super().__init__(name="two_tower")
        dim = config.embedding_dim
        self.num_catalogue = dims.num_items - F.OOV_BUCKETS
        self.history_embedding = _table(dims.num_items, dim, config.seed + 3, "history_embedding", F.ITEM_ID)
        self.user_embedding = _table(dims.num_users, dim, config.seed, "user_embedding", F.USER_ID) if config.two_tower_user_id \
            else None
        self.item_embedding = _table(dims.num_items, dim, config.seed + 1, "item_embedding", F.ITEM_ID)
        self.item_bias = _table(dims.num_items, 1, config.seed + 2, "item_bias", F.ITEM_ID)
        self.content = tf.keras.layers.Dense(dim, use_bias=False, name="item_content")
        self.user_attributes = tf.keras.layers.Dense(dim, use_bias=False, name="user_attributes")
        self.l2 = config.l2
        self.history_sample = max(1, config.two_tower_history_sample)
        self.seed = config.seed
        # Sampling probability of each item as an in-batch negative: its share of the training interactions.
        self.item_probability = tf.Variable(item_probability.astype(np.float32), trainable=False,
                                            name="item_probability")
        self.task = tfrs.tasks.Retrieval(remove_accidental_hits=True, temperature=config.retrieval_temperature)
        self.weighted = dims.weighted
        self._training_rows = _TrainingRows(row_splits, items)
        self.store_history(row_splits, items)

    def store_history(self, row_splits: np.ndarray, items: np.ndarray) -> None:
        """The history each known user is scored from (the Trainer stores every split before export)."""
        self.history_row_splits = tf.Variable(row_splits, trainable=False, name="history_row_splits")
        self.history_items = tf.Variable(items, trainable=False, name="history_items")

    def stored_history(self, users: tf.Tensor) -> tf.SparseTensor:
        return history_lib.stored(users, self.history_row_splits, self.history_items, self.num_catalogue)

    def _user_vector(self, pooled: tf.Tensor, users: tf.Tensor, user_content) -> tf.Tensor:
        content = user_features({} if user_content is None else {F.USER_CONTENT: user_content}, users)
        vectors = pooled + self.user_attributes(content)
        if self.user_embedding is not None:
            vectors += self.user_embedding(users)
        return tf.concat([vectors, tf.ones_like(vectors[:, :1])], axis=1)

    def history_user_vectors(self, history: tf.SparseTensor, users: tf.Tensor, user_content=None) -> tf.Tensor:
        """[batch, dim + 1] from a [batch, catalogue] history (weights as the SparseTensor's values)."""
        pooled = history_lib.mean_pool(history, self.history_embedding.embeddings[:self.num_catalogue])
        return self._user_vector(pooled, users, user_content)

    def user_vectors(self, users: tf.Tensor, user_content: tf.Tensor = None) -> tf.Tensor:
        """Known users from their stored history."""
        return self.history_user_vectors(self.stored_history(users), users, user_content)

    def _training_user_vectors(self, users: tf.Tensor, targets: tf.Tensor, user_content) -> tf.Tensor:
        """Each example's user from their training history without the example's own item, sampled."""
        rows = history_lib.from_ragged(users, self._training_rows.row_splits, self._training_rows.items)
        keep = tf.not_equal(rows, tf.cast(targets, tf.int64)[:, None])
        lengths = tf.cast(tf.maximum(rows.row_lengths(), 1), tf.float32)
        share = tf.minimum(1.0, self.history_sample / lengths)
        sampled = tf.random.uniform(tf.shape(rows.flat_values)) < tf.gather(share, rows.value_rowids())
        keep = tf.logical_and(keep, rows.with_flat_values(sampled))
        rows = tf.ragged.boolean_mask(rows, keep)
        batch = tf.shape(users)[0]
        vectors = tf.gather(self.history_embedding.embeddings, rows.flat_values)
        sums = tf.math.unsorted_segment_sum(vectors, rows.value_rowids(), batch)
        pooled = sums / tf.cast(tf.maximum(rows.row_lengths(), 1), tf.float32)[:, None]
        return self._user_vector(pooled, users, user_content)

    def item_vectors(self, items) -> tf.Tensor:
        """[n, dim + 1]: id embedding + projected content, and the item bias as the last dimension."""
        index = items[F.ITEM_INDEX]
        vectors = self.item_embedding(index) + self.content(content_features(items))
        return tf.concat([vectors, self.item_bias(index)], axis=1)

    def compute_loss(self, inputs, training: bool = False) -> tf.Tensor:
        features = inputs[0] if isinstance(inputs, tuple) else inputs
        # A weighted positive (a purchase over a click) when the data has a weight column; else all count once.
        weights = inputs[1] if self.weighted and isinstance(inputs, tuple) else None
        index = features[F.ITEM_INDEX]
        users = self._training_user_vectors(features[F.USER_INDEX], index, features.get(F.USER_CONTENT))
        items = self.item_vectors(features)
        loss = self.task(users, items, sample_weight=weights,
                         candidate_sampling_probability=tf.gather(self.item_probability, index),
                         candidate_ids=index, compute_metrics=False, compute_batch_metrics=False)
        # L2 on the vectors this batch built (per occurrence), not on whole tables.
        return loss + self.l2 * (tf.reduce_sum(tf.square(users[:, :-1])) + tf.reduce_sum(tf.square(items)))

    def call(self, inputs, training: bool = False) -> tf.Tensor:
        """The score of each (user, item) row: what `predict` returns for a ranking model."""
        users = self.user_vectors(inputs[F.USER_INDEX], inputs.get(F.USER_CONTENT))
        return tf.reduce_sum(users * self.item_vectors(inputs), axis=1)

    def score_history(self, history: tf.SparseTensor, users: tf.Tensor, user_content=None,
                      item_vectors=None) -> tf.Tensor:
        """[batch, catalogue] dot products of the history's user vectors with the catalogue's item vectors."""
        if item_vectors is None:
            raise ValueError("two_tower.score_history needs the catalogue's item vectors (item_vectors)")
        return tf.matmul(self.history_user_vectors(history, users, user_content), item_vectors, transpose_b=True)

    def score_all_items(self, users, items, item_vectors=None, user_content=None) -> tf.Tensor:
        """[batch, N] scores from the users' stored history; a user with neither history nor attributes gets
        the items' popularity instead: the logQ-corrected training leaves the item bias blind to it, so that
        bias alone ranks below most popular."""
        if item_vectors is None:
            item_vectors = self.item_vectors(items)
        history = self.stored_history(users)
        scores = tf.matmul(self.history_user_vectors(history, users, user_content), item_vectors, transpose_b=True)
        content = user_features({} if user_content is None else {F.USER_CONTENT: user_content}, users)
        unknown = (history_lib.lengths(history) == 0) & (tf.reduce_sum(tf.abs(content), axis=1) == 0)

        def with_popularity():  # only when a row needs it: a log over the whole catalogue is not free
            popularity = tf.math.log(tf.gather(self.item_probability, items[F.ITEM_INDEX]))
            return tf.where(unknown[:, None], tf.broadcast_to(popularity[None, :], tf.shape(scores)), scores)

        return tf.cond(tf.reduce_any(unknown), with_popularity, lambda: scores)

    def query_vectors(self, history: tf.SparseTensor, users: tf.Tensor, user_content=None) -> tf.Tensor:
        """What an approximate index is asked with (components/ann.py): a dot product with retrieval_vectors."""
        return self.history_user_vectors(history, users, user_content)

    def retrieval_vectors(self, items) -> tf.Tensor:
        return self.item_vectors(items)

    def similarity_vectors(self, items) -> tf.Tensor:
        return self.item_vectors(items)[:, :-1]


def candidates(items: catalog_lib.Catalog) -> dict:
    """The whole catalogue as model inputs, in vocabulary order."""
    return {F.ITEM_INDEX: tf.range(len(items.item_ids), dtype=tf.int64), F.ITEM_CONTENT: tf.constant(items.item_content)}


def train(dims: ModelDims, config: TrainingConfig, items: catalog_lib.Catalog, train_data: tf.data.Dataset,
          holdout: Holdout, steps_per_epoch=None, callbacks=(), start_from=None) -> TwoTower:
    """Fits on every training interaction; early-stops on the validation split's Recall@10. `start_from(model)`
    (components/warm_start.weights_starter) sets the built model's weights before fitting."""
    counts = np.bincount(items.rated_items, minlength=dims.num_items).astype(np.float64) + 1.0
    model = TwoTower(dims, config, counts / counts.sum(), items.rated_row_splits, items.rated_items)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(config.ranking_learning_rate))
    catalogue = candidates(items)

    user_content = tf.constant(items.user_content)
    if start_from is not None:
        model.user_vectors(tf.constant([0], tf.int64), user_content[:1])  # builds every layer
        model.item_vectors(catalogue)
        start_from(model)

    def score(users):
        users = tf.constant(users, tf.int64)
        return model.score_all_items(users, catalogue, user_content=tf.gather(user_content, users)).numpy()

    monitors = []
    if len(holdout):
        monitors = [ValidationRecall(holdout, score),
                    tf.keras.callbacks.EarlyStopping(monitor=VALIDATION_METRIC, mode="max",
                                                     patience=config.early_stopping_patience,
                                                     restore_best_weights=True)]
    fit = model.fit(train_data, epochs=config.fit_epochs(warm=start_from is not None), steps_per_epoch=steps_per_epoch, verbose=2,
                    callbacks=monitors + list(callbacks))
    # What `auto` compares candidates by: the best epoch's (EarlyStopping restored its weights).
    model.validation_recall = max(fit.history.get(VALIDATION_METRIC, [0.0]))
    vectors = model.item_vectors(catalogue)
    fresh = config.fresh_weight or freshness.tune(
        lambda history, users: model.score_history(history, tf.constant(users), tf.gather(user_content, users),
                                                   item_vectors=vectors).numpy(),
        items.rated_row_splits, items.rated_items, holdout.pairs, len(items.item_ids), seed=config.seed)
    model.fresh_weight = tf.Variable(float(fresh), trainable=False, name="fresh_weight")
    return model
