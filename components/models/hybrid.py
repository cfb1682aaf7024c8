"""Hybrid (NeuMF style): a GMF branch (user ⊙ item embeddings) fused with an MLP branch that also reads
the item's and the user's declared attributes, so collaborative signal and attributes both shape the rating.
With `rating_history` on, the GMF user vector also holds SVD++'s implicit term (components/models/chosen_items.py).
"""

from typing import Optional

import tensorflow as tf

from components import features as F
from components.models import chosen_items
from components.models.base import ModelDims, all_pairs, content_features, dense_stack, embedding, user_features
from components.training_config import TrainingConfig


USES_RATING_HISTORY = True


class NeuMF(tf.keras.Model):
    PAIRWISE_SCORING = True  # every (user, item) pair runs through hidden layers: recommend scores in chunks
    USES_USER_CONTENT = True

    def __init__(self, dims: ModelDims, config: TrainingConfig, rows: Optional[chosen_items.Rows] = None):
        super().__init__(name="hybrid")
        self.gmf_user = embedding(dims.num_users, config, ids=F.USER_ID)
        self.gmf_item = embedding(dims.num_items, config, ids=F.ITEM_ID)
        self.mlp_user = embedding(dims.num_users, config, ids=F.USER_ID)
        self.mlp_item = embedding(dims.num_items, config, ids=F.ITEM_ID)
        self.hidden = dense_stack(config)
        self.dropout = tf.keras.layers.Dropout(config.dropout, seed=config.seed)
        self.out = tf.keras.layers.Dense(1)
        self.global_mean = tf.Variable(dims.global_mean, dtype=tf.float32, trainable=False, name="global_mean")
        self.chosen = chosen_items.layer(dims.num_items, config, rows)  # None: without the implicit term

    def _gmf_users(self, users):
        vectors = self.gmf_user(users)
        return vectors if self.chosen is None else vectors + self.chosen(users)

    def _rate(self, gmf_u, gmf_i, mlp_u, mlp_i, content, training=False):
        x = tf.concat([mlp_u, mlp_i, content], axis=-1)  # content: the item's, then the user's attributes
        for layer in self.hidden:
            x = self.dropout(layer(x), training=training)
        return tf.squeeze(self.out(tf.concat([gmf_u * gmf_i, x], axis=-1)), -1) + self.global_mean

    def call(self, inputs, training=False):
        users, items = inputs[F.USER_INDEX], inputs[F.ITEM_INDEX]
        content = tf.concat([content_features(inputs), user_features(inputs, users)], axis=-1)
        return self._rate(self._gmf_users(users), self.gmf_item(items), self.mlp_user(users), self.mlp_item(items),
                          content, training)

    def score_all_items(self, users, items, user_content=None):
        """[batch, N]: every (user, item) pair through both branches in one batched call."""
        index = items[F.ITEM_INDEX]
        gmf_u, gmf_i = all_pairs(self._gmf_users(users), tf.gather(self.gmf_item.embeddings, index))
        mlp_u, mlp_i = all_pairs(self.mlp_user(users), tf.gather(self.mlp_item.embeddings, index))
        user_content = user_features({} if user_content is None else {F.USER_CONTENT: user_content}, users)
        user_rows, item_rows = all_pairs(user_content, content_features(items))  # same row order as the ids
        content = tf.concat([item_rows, user_rows], axis=-1)
        return tf.reshape(self._rate(gmf_u, gmf_i, mlp_u, mlp_i, content), [tf.shape(users)[0], -1])


    def similarity_vectors(self, items):
        """[N, d] item vectors for "more like this" (cosine): both branches' item embeddings."""
        index = items[F.ITEM_INDEX]
        return tf.concat([tf.gather(self.gmf_item.embeddings, index), tf.gather(self.mlp_item.embeddings, index)], 1)


def build(dims: ModelDims, config: TrainingConfig, rows: Optional[chosen_items.Rows] = None) -> tf.keras.Model:
    return NeuMF(dims, config, rows)
