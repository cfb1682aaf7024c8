"""The item catalogue the exported model ranks: ids, titles and content features per vocabulary index.

Built in one vectorised pass over the transformed training split, so `recommend` can score every
item, and content models can describe an item from its id alone.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from components import features as F


@dataclasses.dataclass(frozen=True)
class Catalog:
    item_ids: List[bytes]  # vocabulary order: index i is item_ids[i]
    titles: np.ndarray  # [N] object (bytes)
    genres: np.ndarray  # [N, num_genres] float32 multi-hot
    years: np.ndarray  # [N] float32, as Transform scaled them
    # Items each user interacted with in the training split, as ragged rows by user index (OOV row
    # included, empty): user u has rated_items[rated_row_splits[u]:rated_row_splits[u + 1]]. What
    # history-based models (EASE) score from: only what training saw, never the held-out splits.
    rated_row_splits: np.ndarray  # [num_users + 1] int64
    rated_items: np.ndarray  # [pairs] int64
    # The same over every split the pipeline saw (train, validation, eval): what serving excludes, so a
    # deployed model never re-recommends an item the user already has. Defaults to the training rows.
    seen_row_splits: np.ndarray = None
    seen_items: np.ndarray = None

    def __post_init__(self):
        if self.seen_row_splits is None:
            object.__setattr__(self, "seen_row_splits", self.rated_row_splits)
            object.__setattr__(self, "seen_items", self.rated_items)

    @property
    def train_pairs(self) -> np.ndarray:
        """[pairs, 2] (user index, item index) of the training split."""
        return np.stack([np.repeat(np.arange(len(self.rated_row_splits) - 1), np.diff(self.rated_row_splits)),
                         self.rated_items], axis=1)


def vocabulary_sizes(tft_output: tft.TFTransformOutput) -> Tuple[int, int, int]:
    """Users, items and genres, each with its OOV buckets: the sizes of the models' lookup tables."""
    return tuple(tft_output.vocabulary_size_by_name(v) + F.OOV_BUCKETS
                 for v in (F.USER_VOCAB, F.ITEM_VOCAB, F.GENRE_VOCAB))


def _as_sparse(values) -> tf.SparseTensor:
    """Variable-length features arrive sparse from the Transform layer and ragged from TFXIO."""
    return values.to_sparse() if isinstance(values, tf.RaggedTensor) else values


def genre_multi_hot(genres_index, num_genres: int) -> tf.Tensor:
    """[batch, num_genres] float32 from Transform's variable-length genre indices."""
    return tf.cast(tf.sparse.to_indicator(_as_sparse(genres_index), num_genres), tf.float32)


def model_inputs(transformed: Dict[str, tf.Tensor], num_genres: int) -> Dict[str, tf.Tensor]:
    """What every model reads, from Transform's outputs: flat ids, genre multi-hot and scaled year."""
    inputs = {key: tf.reshape(transformed[key], [-1]) for key in (F.USER_INDEX, F.ITEM_INDEX, F.YEAR_XF)
              if key in transformed}
    if F.GENRES_INDEX in transformed:
        inputs[F.GENRES_MULTI_HOT] = genre_multi_hot(transformed[F.GENRES_INDEX], num_genres)
    return inputs


def ragged_rows(pairs: np.ndarray, num_users: int) -> Tuple[np.ndarray, np.ndarray]:
    """Unique (user, item) pairs as ragged rows by user index: (row_splits [num_users + 1], items)."""
    pairs = np.unique(pairs.reshape(-1, 2), axis=0)
    row_splits = np.searchsorted(pairs[:, 0], np.arange(num_users + 1)).astype(np.int64)
    return row_splits, pairs[:, 1].astype(np.int64)


def read_pairs(file_pattern: List[str], data_accessor: tfx.components.DataAccessor,
               tft_output: tft.TFTransformOutput) -> np.ndarray:
    """[n, 2] (user index, item index) of transformed examples whose item is in the vocabulary."""
    num_items = tft_output.vocabulary_size_by_name(F.ITEM_VOCAB)
    dataset = data_accessor.tf_dataset_factory(
        file_pattern, tfxio.TensorFlowDatasetOptions(batch_size=8192, num_epochs=1, shuffle=False),
        tft_output.transformed_metadata.schema)
    chunks = [np.zeros((0, 2), np.int64)]
    for batch in dataset:
        users, items = batch[F.USER_INDEX].numpy().reshape(-1), batch[F.ITEM_INDEX].numpy().reshape(-1)
        known = items < num_items
        chunks.append(np.stack([users[known], items[known]], axis=1))
    return np.concatenate(chunks).astype(np.int64)


def with_seen(items: Catalog, other_pairs: np.ndarray) -> Catalog:
    """The catalogue whose exclusion table also covers `other_pairs` (the validation and eval splits)."""
    num_users = len(items.rated_row_splits) - 1
    seen_splits, seen = ragged_rows(np.concatenate([items.train_pairs, other_pairs.reshape(-1, 2)]), num_users)
    return dataclasses.replace(items, seen_row_splits=seen_splits, seen_items=seen)


def build(file_pattern: List[str], data_accessor: tfx.components.DataAccessor,
          tft_output: tft.TFTransformOutput) -> Tuple[float, Catalog]:
    """The training split's global mean rating and the catalogue of the item vocabulary."""
    num_users, _, num_genres = vocabulary_sizes(tft_output)
    item_ids = tft_output.vocabulary_by_name(F.ITEM_VOCAB)
    n = len(item_ids)
    titles = np.full(n, b"", dtype=object)
    genres = np.zeros((n, num_genres), dtype=np.float32)
    years = np.zeros(n, dtype=np.float32)
    dataset = data_accessor.tf_dataset_factory(
        file_pattern, tfxio.TensorFlowDatasetOptions(batch_size=8192, num_epochs=1, shuffle=False),
        tft_output.transformed_metadata.schema)
    total, count = 0.0, 0
    rated_users, rated_items = [], []
    for batch in dataset:
        labels = batch[F.LABEL_XF].numpy().reshape(-1)
        total, count = total + float(labels.sum()), count + labels.size
        items = batch[F.ITEM_INDEX].numpy().reshape(-1)
        known = items < n
        rated_users.append(batch[F.USER_INDEX].numpy().reshape(-1)[known])
        rated_items.append(items[known])
        titles[items[known]] = batch[F.TITLE_XF].numpy().reshape(-1)[known]
        years[items[known]] = batch[F.YEAR_XF].numpy().reshape(-1)[known]
        sparse = _as_sparse(batch[F.GENRES_INDEX])
        value_items = items[sparse.indices.numpy()[:, 0]]
        keep = value_items < n
        genres[value_items[keep], sparse.values.numpy()[keep]] = 1.0
    if count == 0:
        raise ValueError("the training split is empty")
    row_splits, rated = ragged_rows(np.stack([np.concatenate(rated_users), np.concatenate(rated_items)], axis=1),
                                    num_users)
    return total / count, Catalog(item_ids, titles, genres, years, row_splits, rated)
