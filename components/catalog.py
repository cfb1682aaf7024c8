"""The item catalogue the exported model ranks: ids, titles and content vectors per vocabulary index.

Built in one vectorised pass over the transformed training split, so `recommend` can score every
item, and content models can describe an item from its id alone.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import Callable, Dict, Iterator, List, Optional, Set, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tfx_bsl.public import tfxio

from components import example_files
from components import features as F
from components.contract import CATEGORICAL, NUMERIC, DataContract

# The Trainer's custom_config key saying its examples are ExampleGen's (a window of spans: Transform analyzes them but
# does not write them again, which cost a 7-day window most of its run; the transform graph is applied as they are
# read, read_transformed).
RAW_EXAMPLES_KEY = "raw_examples"


def raw_examples(custom_config) -> bool:
    return bool((custom_config or {}).get(RAW_EXAMPLES_KEY, False))


def read_transformed(file_pattern: List[str], tft_output: tft.TFTransformOutput,
                     options: tfxio.TensorFlowDatasetOptions, raw: bool = False,
                     ids_only: bool = False) -> tf.data.Dataset:
    """Batches of transformed features (with `options.label_key`: (features, label) pairs): Transform's materialized
    examples as they are, or (`raw`) ExampleGen's through the transform graph. `ids_only`: only the user and item
    indices are read (the transform graph is given the ids alone, the rest of an example is not parsed)."""
    if not raw:
        return example_files.parsed_examples(file_pattern, tft_output.transformed_metadata.schema, options,
                                             columns=(F.USER_INDEX, F.ITEM_INDEX) if ids_only else None)
    label_key = options.label_key
    # AutoGraph would transpile the Transform layer's and Keras's Python source as tf.data traces the map (a warm
    # EASE Trainer on a 7-day window: 19.0 s with it, 14.2 s without); the layer applies a saved graph and has no
    # Python control flow to convert.
    layer = tf.autograph.experimental.do_not_convert(tft_output.transform_features_layer())
    dataset = example_files.parsed_examples(file_pattern, tft_output.raw_metadata.schema,
                                            options._replace(label_key=None),
                                            columns=(F.USER_ID, F.ITEM_ID) if ids_only else None)
    dataset = dataset.map(layer, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not options.sloppy_ordering)
    if label_key is None:
        return dataset
    return dataset.map(tf.autograph.experimental.do_not_convert(
        lambda features: ({k: v for k, v in features.items() if k != label_key}, features[label_key])))


_TRANSFORMS: "weakref.WeakKeyDictionary[tft.TFTransformOutput, Dict[str, Callable]]" = weakref.WeakKeyDictionary()


def transformed_batches(file_pattern: List[str], tft_output: tft.TFTransformOutput,
                        options: tfxio.TensorFlowDatasetOptions, raw: bool = False,
                        ids_only: bool = False) -> Iterator[Dict[str, tf.Tensor]]:
    """read_transformed's batches (without a label key) for a Python loop, the transform graph applied by one graph
    function per Transform output, called batch by batch. Mapped in tf.data, it is instantiated and optimized again
    for every new iterator: each read of a held-out split paid ~0.2 s for that, and ~0.02 s for transforming its
    ~9,600 examples (a 7-day window)."""
    if not raw:
        yield from read_transformed(file_pattern, tft_output, options, ids_only=ids_only)
        return
    dataset = example_files.parsed_examples(file_pattern, tft_output.raw_metadata.schema, options,
                                            columns=(F.USER_ID, F.ITEM_ID) if ids_only else None)
    functions = _TRANSFORMS.setdefault(tft_output, {})
    key = repr(sorted(dataset.element_spec.items()))
    if key not in functions:
        functions[key] = tf.function(tft_output.transform_features_layer(), input_signature=[dataset.element_spec],
                                     autograph=False)
    for batch in dataset:
        yield functions[key](batch)


@dataclasses.dataclass(frozen=True)
class ContentLayout:
    """How declared attributes become the models' dense content vectors: (transformed key, kind, width) per
    feature, items and users apart. Widths are vocabulary sizes (+ OOV), or 2 for a number (z, missing)."""

    item: Tuple[Tuple[str, str, int], ...] = ()
    user: Tuple[Tuple[str, str, int], ...] = ()

    @property
    def item_width(self) -> int:
        return max(1, sum(width for _, _, width in self.item))

    @property
    def user_width(self) -> int:
        return max(1, sum(width for _, _, width in self.user))


def content_layout(contract: DataContract, tft_output: tft.TFTransformOutput) -> ContentLayout:
    def entries(features):
        out = []
        for feature in contract.used(features):
            width = 2 if feature.kind == NUMERIC else (
                tft_output.vocabulary_size_by_name(F.vocab_name(feature.name)) + F.OOV_BUCKETS)
            out.append((F.transformed_name(feature.name), feature.kind, int(width)))
        return tuple(out)

    return ContentLayout(item=entries(contract.item_features), user=entries(contract.user_features))


@dataclasses.dataclass(frozen=True)
class Catalog:
    item_ids: List[bytes]  # vocabulary order: index i is item_ids[i]
    titles: np.ndarray  # [N] object (bytes)
    item_content: np.ndarray  # [N, item width] float32: each item's encoded attributes
    # Items each user interacted with in the training split, as ragged rows by user index (OOV row
    # included, empty): user u has rated_items[rated_row_splits[u]:rated_row_splits[u + 1]]. What
    # history-based models (EASE) score from: only what training saw, never the held-out splits.
    rated_row_splits: np.ndarray  # [num_users + 1] int64
    rated_items: np.ndarray  # [pairs] int64
    # [num_users (with OOV), user width] float32: each known user's encoded attributes (OOV row zeros).
    user_content: np.ndarray = None
    # The same over every split the pipeline saw (train, validation, eval): what serving excludes, so a
    # deployed model never re-recommends an item the user already has. Defaults to the training rows.
    seen_row_splits: np.ndarray = None
    seen_items: np.ndarray = None
    # [N] bool: which items may be recommended (components/availability.py); default every one. A retired item
    # stays in the vocabulary (histories that hold it still score), it is only never recommended.
    active: np.ndarray = None

    def __post_init__(self):
        if self.active is None:
            object.__setattr__(self, "active", np.ones(len(self.item_ids), bool))
        if self.seen_row_splits is None:
            object.__setattr__(self, "seen_row_splits", self.rated_row_splits)
            object.__setattr__(self, "seen_items", self.rated_items)
        if self.user_content is None:
            object.__setattr__(self, "user_content", np.zeros((len(self.rated_row_splits) - 1, 1), np.float32))

    @property
    def train_pairs(self) -> np.ndarray:
        """[pairs, 2] (user index, item index) of the training split."""
        return np.stack([np.repeat(np.arange(len(self.rated_row_splits) - 1), np.diff(self.rated_row_splits)),
                         self.rated_items], axis=1)


def vocabulary_sizes(tft_output: tft.TFTransformOutput) -> Tuple[int, int]:
    """Users and items, each with its OOV buckets: the sizes of the models' id tables."""
    return tuple(tft_output.vocabulary_size_by_name(v) + F.OOV_BUCKETS for v in (F.USER_VOCAB, F.ITEM_VOCAB))


def _as_sparse(values) -> tf.SparseTensor:
    """Variable-length features arrive sparse from the Transform layer and from parse_example, ragged where a
    schema declares a ragged tensor representation."""
    if isinstance(values, tf.RaggedTensor):
        return values.to_sparse()
    if isinstance(values, tf.SparseTensor):
        return values
    return tf.sparse.from_dense(tf.reshape(values, [tf.shape(values)[0], -1]))


def encode_content(transformed: Dict[str, tf.Tensor], entries, rows: tf.Tensor) -> tf.Tensor:
    """[rows, width] float32: numbers as (z, missing), categories one-hot, multi-valued and text features
    as L2-normalised multi-hots (a long description weighs as much as one category)."""
    parts = []
    for key, kind, width in entries:
        x = transformed[key]
        if kind == NUMERIC:
            parts.append(tf.reshape(tf.cast(x, tf.float32), [-1, 2]))
        elif kind == CATEGORICAL:
            parts.append(tf.one_hot(tf.reshape(x, [-1]), width))
        else:
            sparse = _as_sparse(x)
            sparse = tf.SparseTensor(sparse.indices, sparse.values, tf.stack([tf.cast(rows, tf.int64), width]))
            hot = tf.cast(tf.sparse.to_indicator(sparse, width), tf.float32)
            parts.append(tf.math.l2_normalize(hot, axis=1))
    if not parts:
        return tf.zeros([rows, 1])
    return tf.concat(parts, axis=1)


def model_inputs(transformed: Dict[str, tf.Tensor], layout: ContentLayout) -> Dict[str, tf.Tensor]:
    """What every model reads, from Transform's outputs: flat ids and the item's and user's content vectors."""
    inputs = {key: tf.reshape(transformed[key], [-1]) for key in (F.USER_INDEX, F.ITEM_INDEX) if key in transformed}
    anchor = inputs.get(F.USER_INDEX, inputs.get(F.ITEM_INDEX))
    rows = tf.shape(anchor)[0]
    if all(key in transformed for key, _, _ in layout.item):
        inputs[F.ITEM_CONTENT] = encode_content(transformed, layout.item, rows)
    if all(key in transformed for key, _, _ in layout.user):
        inputs[F.USER_CONTENT] = encode_content(transformed, layout.user, rows)
    return inputs


def ragged_rows(pairs: np.ndarray, num_users: int) -> Tuple[np.ndarray, np.ndarray]:
    """Unique (user, item) pairs as ragged rows by user index: (row_splits [num_users + 1], items).

    Each pair as one int64 key (user x width + item): a 1-D unique, 10x faster than np.unique(axis=0)."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    width = int(pairs[:, 1].max()) + 1 if len(pairs) else 1
    users, items = np.divmod(np.unique(pairs[:, 0] * width + pairs[:, 1]), width)
    return np.searchsorted(users, np.arange(num_users + 1)).astype(np.int64), items


def read_pairs(file_pattern: List[str], tft_output: tft.TFTransformOutput, raw: bool = False) -> np.ndarray:
    """[n, 2] (user index, item index) of transformed examples whose item is in the vocabulary."""
    num_items = tft_output.vocabulary_size_by_name(F.ITEM_VOCAB)
    batches = transformed_batches(file_pattern, tft_output,
                                  tfxio.TensorFlowDatasetOptions(batch_size=8192, num_epochs=1, shuffle=False), raw,
                                  ids_only=True)
    chunks = [np.zeros((0, 2), np.int64)]
    for batch in batches:
        users, items = batch[F.USER_INDEX].numpy().reshape(-1), batch[F.ITEM_INDEX].numpy().reshape(-1)
        known = items < num_items
        chunks.append(np.stack([users[known], items[known]], axis=1))
    return np.concatenate(chunks).astype(np.int64)


def with_seen(items: Catalog, other_pairs: np.ndarray) -> Catalog:
    """The catalogue whose exclusion table also covers `other_pairs` (the validation and eval splits)."""
    num_users = len(items.rated_row_splits) - 1
    seen_splits, seen = ragged_rows(np.concatenate([items.train_pairs, other_pairs.reshape(-1, 2)]), num_users)
    return dataclasses.replace(items, seen_row_splits=seen_splits, seen_items=seen)


def with_active(items: Catalog, active_ids: Optional[Set[str]]) -> Catalog:
    """The catalogue with only `active_ids` recommendable (None: every item)."""
    if active_ids is None:
        return dataclasses.replace(items, active=np.ones(len(items.item_ids), bool))
    wanted = {i.encode("utf-8") if isinstance(i, str) else i for i in active_ids}
    return dataclasses.replace(items, active=np.array([i in wanted for i in items.item_ids], bool))


def build(file_pattern: List[str], tft_output: tft.TFTransformOutput, layout: ContentLayout,
          raw: bool = False) -> Tuple[float, Catalog]:
    """The training split's global mean label and the catalogue of the item vocabulary."""
    num_users, _ = vocabulary_sizes(tft_output)
    item_ids = tft_output.vocabulary_by_name(F.ITEM_VOCAB)
    n = len(item_ids)
    titles = np.full(n, b"", dtype=object)
    item_content = np.zeros((n, layout.item_width), dtype=np.float32)
    user_content = np.zeros((num_users, layout.user_width), dtype=np.float32)

    # The content vectors are built in tf.data's map (graph mode, beside the reads), not op by op in this loop.
    @tf.autograph.experimental.do_not_convert  # no Python control flow on tensors: nothing to transpile
    def columns(batch):
        inputs = model_inputs(batch, layout)
        out = {key: tf.reshape(batch[key], [-1]) for key in (F.LABEL_XF, F.ITEM_INDEX, F.USER_INDEX, F.ITEM_TITLE_XF)
               if key in batch}
        out[F.ITEM_CONTENT], out[F.USER_CONTENT] = inputs[F.ITEM_CONTENT], inputs[F.USER_CONTENT]
        return out

    dataset = read_transformed(file_pattern, tft_output,
                               tfxio.TensorFlowDatasetOptions(batch_size=8192, num_epochs=1, shuffle=False), raw)
    total, count = 0.0, 0
    rated_users, rated_items = [], []
    for batch in dataset.map(columns, num_parallel_calls=tf.data.AUTOTUNE).as_numpy_iterator():
        labels = batch[F.LABEL_XF]
        total, count = total + float(labels.sum()), count + labels.size
        items, users = batch[F.ITEM_INDEX], batch[F.USER_INDEX]
        known = items < n
        rated_users.append(users[known])
        rated_items.append(items[known])
        if F.ITEM_TITLE_XF in batch:
            titles[items[known]] = batch[F.ITEM_TITLE_XF][known]
        item_content[items[known]] = batch[F.ITEM_CONTENT][known]
        user_content[users] = batch[F.USER_CONTENT]
    if count == 0:
        raise ValueError("the training split is empty")
    user_content[num_users - F.OOV_BUCKETS:] = 0.0  # an unknown user has no attributes of its own
    row_splits, rated = ragged_rows(np.stack([np.concatenate(rated_users), np.concatenate(rated_items)], axis=1),
                                    num_users)
    return total / count, Catalog(item_ids, titles, item_content, row_splits, rated, user_content=user_content)
