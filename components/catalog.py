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
    # Items each user rated in training, as ragged rows by user index (OOV row included, empty):
    # user u rated rated_items[rated_row_splits[u]:rated_row_splits[u + 1]].
    rated_row_splits: np.ndarray  # [num_users + 1] int64
    rated_items: np.ndarray  # [pairs] int64


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
    pairs = np.unique(np.stack([np.concatenate(rated_users), np.concatenate(rated_items)], axis=1), axis=0)
    row_splits = np.searchsorted(pairs[:, 0], np.arange(num_users + 1)).astype(np.int64)
    return total / count, Catalog(item_ids, titles, genres, years, row_splits, pairs[:, 1].astype(np.int64))
