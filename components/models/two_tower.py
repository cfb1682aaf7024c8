"""Two-tower retrieval trained on implicit feedback with TensorFlow Recommenders.

Every interaction is a positive; the other items of the batch are the negatives (in-batch sampled
softmax, `tfrs.tasks.Retrieval`), corrected by each item's sampling probability (logQ) so popular
items are not pushed down merely for appearing as negatives more often, and with accidental hits
(the same item twice in a batch) removed. The user tower adds the user's projected attributes (when the
data declares any) to an id embedding; the item tower adds the item's projected attributes to its id
embedding, plus a learned item bias carried as one more dimension (user side 1), so a user the model
has never seen is ranked by its attributes when it has any, and by popularity otherwise.
`recommend` is one matrix product of user vectors against the item vectors computed at export.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from components import catalog as catalog_lib
from components import features as F
from components.models.base import ModelDims, content_features, user_features
from components.models.topk import VALIDATION_METRIC, Holdout, ValidationRecall
from components.training_config import TrainingConfig


def _table(rows: int, dim: int, seed: int, name: str) -> tf.keras.layers.Embedding:
    layer = tf.keras.layers.Embedding(
        rows, dim, embeddings_initializer=tf.keras.initializers.RandomNormal(stddev=0.05, seed=seed), name=name)
    layer.build((None,))
    return layer


class TwoTower(tfrs.Model):
    PREDICTS_RATINGS = False  # predict / serving_default answer a ranking score
    USES_USER_CONTENT = True

    def __init__(self, dims: ModelDims, config: TrainingConfig, item_probability: np.ndarray):
        super().__init__(name="two_tower")
        dim = config.embedding_dim
        self.user_embedding = _table(dims.num_users, dim, config.seed, "user_embedding")
        self.item_embedding = _table(dims.num_items, dim, config.seed + 1, "item_embedding")
        self.item_bias = _table(dims.num_items, 1, config.seed + 2, "item_bias")
        self.content = tf.keras.layers.Dense(dim, use_bias=False, name="item_content")
        self.user_attributes = tf.keras.layers.Dense(dim, use_bias=False, name="user_attributes")
        self.l2 = config.l2
        # Sampling probability of each item as an in-batch negative: its share of the training interactions.
        self.item_probability = tf.Variable(item_probability.astype(np.float32), trainable=False,
                                            name="item_probability")
        self.task = tfrs.tasks.Retrieval(remove_accidental_hits=True, temperature=config.retrieval_temperature)
        self.weighted = dims.weighted

    def user_vectors(self, users: tf.Tensor, user_content: tf.Tensor = None) -> tf.Tensor:
        content = user_features({} if user_content is None else {F.USER_CONTENT: user_content}, users)
        vectors = self.user_embedding(users) + self.user_attributes(content)
        return tf.concat([vectors, tf.ones_like(vectors[:, :1])], axis=1)

    def item_vectors(self, items) -> tf.Tensor:
        """[n, dim + 1]: id embedding + projected content, and the item bias as the last dimension."""
        index = items[F.ITEM_INDEX]
        vectors = self.item_embedding(index) + self.content(content_features(items))
        return tf.concat([vectors, self.item_bias(index)], axis=1)

    def compute_loss(self, inputs, training: bool = False) -> tf.Tensor:
        features = inputs[0] if isinstance(inputs, tuple) else inputs
        # A weighted positive (a purchase over a click) when the data has a weight column; else all count once.
        weights = inputs[1] if self.weighted and isinstance(inputs, tuple) else None
        users = self.user_vectors(features[F.USER_INDEX], features.get(F.USER_CONTENT))
        items = self.item_vectors(features)
        index = features[F.ITEM_INDEX]
        loss = self.task(users, items, sample_weight=weights,
                         candidate_sampling_probability=tf.gather(self.item_probability, index),
                         candidate_ids=index, compute_metrics=False, compute_batch_metrics=False)
        # L2 on the rows this batch looked up (per occurrence), not on whole tables.
        return loss + self.l2 * (tf.reduce_sum(tf.square(users[:, :-1])) + tf.reduce_sum(tf.square(items)))

    def call(self, inputs, training: bool = False) -> tf.Tensor:
        """The score of each (user, item) row: what `predict` returns for a ranking model."""
        users = self.user_vectors(inputs[F.USER_INDEX], inputs.get(F.USER_CONTENT))
        return tf.reduce_sum(users * self.item_vectors(inputs), axis=1)

    def score_all_items(self, users, items, item_vectors=None, user_content=None) -> tf.Tensor:
        """[batch, N] dot products; a user with neither history (the OOV row) nor attributes gets the items'
        popularity instead: the logQ-corrected training leaves the item bias blind to it, so that bias alone
        ranks below most popular."""
        if item_vectors is None:
            item_vectors = self.item_vectors(items)
        scores = tf.matmul(self.user_vectors(users, user_content), item_vectors, transpose_b=True)
        content = user_features({} if user_content is None else {F.USER_CONTENT: user_content}, users)
        unknown = (tf.cast(users, tf.int64) >= self.user_embedding.input_dim - F.OOV_BUCKETS) & (
            tf.reduce_sum(tf.abs(content), axis=1) == 0)
        popularity = tf.math.log(tf.gather(self.item_probability, items[F.ITEM_INDEX]))
        return tf.where(unknown[:, None], tf.broadcast_to(popularity[None, :], tf.shape(scores)), scores)

    def similarity_vectors(self, items) -> tf.Tensor:
        return self.item_vectors(items)[:, :-1]


def candidates(items: catalog_lib.Catalog) -> dict:
    """The whole catalogue as model inputs, in vocabulary order."""
    return {F.ITEM_INDEX: tf.range(len(items.item_ids), dtype=tf.int64), F.ITEM_CONTENT: tf.constant(items.item_content)}


def train(dims: ModelDims, config: TrainingConfig, items: catalog_lib.Catalog, train_data: tf.data.Dataset,
          holdout: Holdout, steps_per_epoch=None, callbacks=()) -> TwoTower:
    """Fits on every training interaction; early-stops on the validation split's Recall@10."""
    counts = np.bincount(items.rated_items, minlength=dims.num_items).astype(np.float64) + 1.0
    model = TwoTower(dims, config, counts / counts.sum())
    model.compile(optimizer=tf.keras.optimizers.Adagrad(config.ranking_learning_rate))
    catalogue = candidates(items)

    user_content = tf.constant(items.user_content)

    def score(users):
        users = tf.constant(users, tf.int64)
        return model.score_all_items(users, catalogue, user_content=tf.gather(user_content, users)).numpy()

    monitors = []
    if len(holdout):
        monitors = [ValidationRecall(holdout, score),
                    tf.keras.callbacks.EarlyStopping(monitor=VALIDATION_METRIC, mode="max",
                                                     patience=config.early_stopping_patience,
                                                     restore_best_weights=True)]
    model.fit(train_data, epochs=config.epochs, steps_per_epoch=steps_per_epoch, verbose=2,
              callbacks=monitors + list(callbacks))
    return model
