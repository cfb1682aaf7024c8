"""ExampleGen that joins item attributes into every rating, so Transform and Trainer see them.

The input base holds `interactions.csv` (matched by the split pattern) and `items.csv`. Items
are a Beam side input, which keeps the join distributed: interactions are never collected.

Three splits (F.SPLIT_NAMES): train (what models fit), validation (early stopping, tuning) and eval
(what the gates and the benchmark judge; training never sees it). TFX's hash split by default; or by
time, as recommenders are judged in production (train on the past, evaluate on the future): `time`
puts the newest interactions overall in eval and the next newest in validation (global cut-offs),
`user-time` does the same within each user's history, `leave-last-one-out` puts each user's newest
interaction in eval and the one before it in validation (the usual protocol for top-k metrics).
Interactions that share a timestamp are never split apart, and users with fewer than three
interactions stay in train.
"""

from __future__ import annotations

import csv
import math
import posixpath
from typing import Any, Dict, Iterable, List, Tuple

import apache_beam as beam
import tensorflow as tf
from google.protobuf import any_pb2, json_format, struct_pb2
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import standard_component_specs

from components import features as F

_ItemRow = Tuple[str, int, Tuple[str, ...]]  # title, year, genres


class InputError(ValueError):
    """A malformed input file; the message names the file and the line."""


def _csv_rows(path: str, expected: Tuple[str, ...]) -> beam.PTransform:
    @beam.ptransform_fn
    def _read(pipeline):
        return (
            pipeline
            | "Read" >> beam.io.ReadFromText(path, skip_header_lines=1, coder=beam.coders.BytesCoder())
            | "Parse" >> beam.Map(_parse_line, path, len(expected))
        )

    return _read()


def _parse_line(raw: bytes, path: str, width: int) -> list:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: row {raw[:80]!r} is not UTF-8") from None
    row = next(csv.reader([line]))
    if len(row) != width:
        raise InputError(f"{path}: expected {width} columns, got {len(row)} in row {line!r}")
    return row


def check_header(path: str, expected: Tuple[str, ...]) -> None:
    """Fails fast, before any Beam work, when a file is missing or its columns are not the contract."""
    if not tf.io.gfile.exists(path):
        raise InputError(f"{path}: file not found")
    with tf.io.gfile.GFile(path, "rb") as f:
        first = f.readline()
    try:
        header = next(csv.reader([first.decode("utf-8-sig").strip()]), [])
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    if tuple(header) != expected:
        raise InputError(f"{path}: header must be {','.join(expected)} (got {','.join(header) or 'nothing'})")


def _item_entry(row: list, path: str) -> Tuple[str, _ItemRow]:
    item_id, title, genres, year = row
    genre_list = tuple(g for g in genres.split(F.GENRE_SEPARATOR) if g)
    try:
        year_value = int(year) if year else 0
    except ValueError:
        raise InputError(f"{path}: year {year!r} of item {item_id!r} is not an integer") from None
    return item_id, (title, year_value, genre_list)


def _to_example(row: list, items: Dict[str, _ItemRow], user_counts: Dict[str, int], item_counts: Dict[str, int],
                path: str) -> tf.train.Example:
    user_id, item_id, rating, timestamp = row
    if not user_id or not item_id:
        raise InputError(f"{path}: empty user_id or item_id in row {','.join(row)!r}")
    try:
        rating_value, ts_value = float(rating), int(timestamp)
    except ValueError:
        raise InputError(f"{path}: bad rating or timestamp in row {','.join(row)!r}") from None
    title, year, genres = items.get(item_id, ("", 0, ()))
    feature = {
        F.USER_ID: _bytes([user_id]),
        F.ITEM_ID: _bytes([item_id]),
        F.RATING: tf.train.Feature(float_list=tf.train.FloatList(value=[rating_value])),
        F.TIMESTAMP: _int64([ts_value]),
        F.TITLE: _bytes([title]),
        F.GENRES: _bytes(genres),
        F.YEAR: _int64([year]),
        F.USER_ACTIVITY: _bytes([F.count_bucket(user_counts[user_id], F.ACTIVITY_EDGES)]),
        F.ITEM_POPULARITY: _bytes([F.count_bucket(item_counts[item_id], F.POPULARITY_EDGES)]),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def _bytes(values: Iterable[str]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode("utf-8") for v in values]))


def _int64(values: Iterable[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(tf.train.Example)
def _JoinedRatingsToExample(  # pylint: disable=invalid-name
    pipeline: beam.Pipeline, exec_properties: Dict[str, Any], split_pattern: str
) -> beam.pvalue.PCollection:
    input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
    interactions_path = posixpath.join(input_base, split_pattern)
    items_path = posixpath.join(input_base, F.ITEMS_FILE)
    for path in tf.io.gfile.glob(interactions_path) or [interactions_path]:
        check_header(path, F.INTERACTION_COLUMNS)
    check_header(items_path, F.ITEM_COLUMNS)
    items = (
        pipeline
        | "ReadItems" >> _csv_rows(items_path, F.ITEM_COLUMNS)
        | "KeyItems" >> beam.Map(_item_entry, items_path)
    )
    rows = pipeline | "ReadInteractions" >> _csv_rows(interactions_path, F.INTERACTION_COLUMNS)
    user_counts = rows | "Users" >> beam.Map(lambda r: r[0]) | "CountUsers" >> beam.combiners.Count.PerElement()
    item_counts = rows | "Items" >> beam.Map(lambda r: r[1]) | "CountItems" >> beam.combiners.Count.PerElement()
    return rows | "JoinItems" >> beam.Map(
        _to_example, beam.pvalue.AsDict(items), beam.pvalue.AsDict(user_counts), beam.pvalue.AsDict(item_counts),
        interactions_path)


SPLIT_HASH, SPLIT_TIME, SPLIT_USER_TIME, SPLIT_LAST_ONE = "hash", "time", "user-time", "leave-last-one-out"
SPLITS = (SPLIT_HASH, SPLIT_TIME, SPLIT_USER_TIME, SPLIT_LAST_ONE)
# A user's history is split only from this length on (one interaction each for train, validation, eval).
MIN_HISTORY_TO_SPLIT = 3
_TRAIN, _VALIDATION, _EVAL = range(3)  # partition numbers, in F.SPLIT_NAMES order
_EVAL_FRACTION, _VALIDATION_FRACTION = "eval_fraction", "validation_fraction"


def split_custom_config(kind: str, eval_fraction: float, validation_fraction: float) -> example_gen_pb2.CustomConfig:
    """The ExampleGen custom_config that selects the split (hash buckets still size the hash split)."""
    if kind not in SPLITS:
        raise ValueError(f"unknown split {kind!r}; choose one of: {', '.join(SPLITS)}")
    for name, value in ((_EVAL_FRACTION, eval_fraction), (_VALIDATION_FRACTION, validation_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if eval_fraction + validation_fraction >= 1.0:
        raise ValueError(f"eval and validation fractions leave nothing to train on ({eval_fraction} + "
                         f"{validation_fraction})")
    options = struct_pb2.Struct()
    options.update({"split": kind, _EVAL_FRACTION: eval_fraction, _VALIDATION_FRACTION: validation_fraction})
    packed = any_pb2.Any()
    packed.Pack(options)
    return example_gen_pb2.CustomConfig(custom_config=packed)


def _split_options(exec_properties: Dict[str, Any]) -> Tuple[str, float, float]:
    raw = exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY)
    if not raw:
        return SPLIT_HASH, 0.0, 0.0
    config = json_format.Parse(raw, example_gen_pb2.CustomConfig()) if isinstance(raw, str) else raw
    options = struct_pb2.Struct()
    if not config.custom_config.Unpack(options):
        return SPLIT_HASH, 0.0, 0.0
    validation = float(options[_VALIDATION_FRACTION]) if _VALIDATION_FRACTION in options else 0.0
    return options["split"], float(options[_EVAL_FRACTION]), validation


def _timestamp(example: tf.train.Example) -> int:
    return example.features.feature[F.TIMESTAMP].int64_list.value[0]


def _user(example: tf.train.Example) -> bytes:
    return example.features.feature[F.USER_ID].bytes_list.value[0]


def _first_at_or_after(history: List[tf.train.Example], newest: int, end: int) -> int:
    """Index where the `newest` last of history[:end] begin, moved back to the first of a run of ties."""
    if newest <= 0 or end <= 0:
        return end
    cutoff = _timestamp(history[max(0, end - newest)])
    return next(i for i in range(end) if _timestamp(history[i]) >= cutoff)


def _split_user_history(keyed: Tuple[bytes, Iterable[tf.train.Example]], eval_fraction: float,
                        validation_fraction: float, last_one: bool):
    """(partition, example) for one user's history: the newest fraction (or the newest one) is eval, the
    next newest validation; ties stay together, and the train part is never emptied by them."""
    _, examples = keyed
    history = sorted(examples, key=_timestamp)
    n = len(history)
    first_eval = first_validation = n
    if n >= MIN_HISTORY_TO_SPLIT:
        n_eval = 1 if last_one else math.ceil(n * eval_fraction)
        n_validation = 1 if last_one else math.ceil(n * validation_fraction)
        first_eval = _first_at_or_after(history, n_eval, n)
        if first_eval == 0:  # ties reach back to the oldest interaction: nothing is "before" them
            first_eval = n
        first_validation = _first_at_or_after(history, n_validation, first_eval)
        if first_validation == 0:
            first_validation = first_eval
    for i, example in enumerate(history):
        yield (_EVAL if i >= first_eval else _VALIDATION if i >= first_validation else _TRAIN), example


def _by_cutoffs(example: tf.train.Example, cutoffs: Tuple[int, int]) -> Tuple[int, tf.train.Example]:
    validation_from, eval_from = cutoffs
    ts = _timestamp(example)
    return (_EVAL if ts >= eval_from else _VALIDATION if ts >= validation_from else _TRAIN), example


def _global_cutoffs(quantiles: List[int], eval_fraction: float, validation_fraction: float) -> Tuple[int, int]:
    """(first validation timestamp, first eval timestamp) from percentiles; a zero fraction is no split."""
    def at(fraction: float) -> int:
        return quantiles[min(100, round((1 - fraction) * 100))]

    eval_from = at(eval_fraction) if eval_fraction > 0 else quantiles[-1] + 1
    validation_from = at(eval_fraction + validation_fraction) if validation_fraction > 0 else eval_from
    return min(validation_from, eval_from), eval_from


class Executor(BaseExampleGenExecutor):
    """Beam executor: CSV interactions joined with CSV items, to tf.Examples, split by hash or by time."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        return _JoinedRatingsToExample

    def GenerateExamplesByBeam(self, pipeline: beam.Pipeline, exec_properties: Dict[str, Any]):
        kind, eval_fraction, validation_fraction = _split_options(exec_properties)
        input_config = json_format.Parse(exec_properties[standard_component_specs.INPUT_CONFIG_KEY],
                                         example_gen_pb2.Input())
        output_config = json_format.Parse(exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY],
                                          example_gen_pb2.Output())
        names = example_gen_utils.generate_output_split_names(input_config, output_config)
        if sorted(names) != sorted(F.SPLIT_NAMES):
            raise ValueError(f"output splits must be {', '.join(F.SPLIT_NAMES)} (got {', '.join(names)})")
        if kind == SPLIT_HASH:
            return super().GenerateExamplesByBeam(pipeline, exec_properties)
        examples = pipeline | "InputToRecord" >> _JoinedRatingsToExample(  # pylint: disable=no-value-for-parameter
            exec_properties, input_config.splits[0].pattern)
        if kind in (SPLIT_USER_TIME, SPLIT_LAST_ONE):
            tagged = (examples
                      | "KeyByUser" >> beam.Map(lambda e: (_user(e), e))
                      | "GroupByUser" >> beam.GroupByKey()
                      | "SplitPerUser" >> beam.FlatMap(_split_user_history, eval_fraction, validation_fraction,
                                                       kind == SPLIT_LAST_ONE))
        else:
            cutoffs = (examples
                       | "Timestamps" >> beam.Map(_timestamp)
                       | "Quantiles" >> beam.ApproximateQuantiles.Globally(101)
                       | "Cutoffs" >> beam.Map(_global_cutoffs, eval_fraction, validation_fraction))
            tagged = examples | "ByCutoffs" >> beam.Map(_by_cutoffs, beam.pvalue.AsSingleton(cutoffs))
        parts = tagged | "Partition" >> beam.Partition(lambda pair, _: pair[0], len(F.SPLIT_NAMES))
        return {name: part | f"{name.capitalize()}Examples" >> beam.Values()
                for name, part in zip(F.SPLIT_NAMES, parts)}


class RatingsExampleGen(FileBasedExampleGen):
    """FileBasedExampleGen whose executor joins `items.csv` into `interactions.csv` rows."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
