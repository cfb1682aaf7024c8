"""ExampleGen that joins item (and user) attributes into every interaction, so Transform and Trainer see them.

The input base holds the files the data contract (components/contract.py) names: interactions (CSV or
Parquet, matched by the split pattern), optional items and users. Items and users are Beam side inputs,
which keeps the join distributed: interactions are never collected. Each attribute is written as its
declared kind: a float (NaN when missing), one string, or a list of strings.

Three splits (F.SPLIT_NAMES): train (what models fit), validation (early stopping, tuning) and eval
(what the gates and the benchmark judge; training never sees it). A hash split (of the user, the item and
the time, so attribute edits never move an interaction; hash buckets size the splits); or by time, as
recommenders are judged in production (train on the past, evaluate on the future): `time`
puts the newest interactions overall in eval and the next newest in validation (global cut-offs),
`user-time` does the same within each user's history, `leave-last-one-out` puts each user's newest
interaction in eval and the one before it in validation (the usual protocol for top-k metrics). `user-hash`
holds users out: a hash of the user and the span sends all of a user's interactions in the span to one split,
so a held-out user's day is never partly fitted and is judged from their earlier spans, as the next day's
serving is (the daily cycle's split over a window of spans; pipeline/config.py: resolve_split).
Interactions that share a timestamp are never split apart, and users with fewer than three
interactions stay in train. The pipeline's default, `auto` (pipeline/config.py: resolve_split), reaches this
executor already resolved: `user-time` when the contract has a timestamp, else `hash`.
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import math
import pickle
import posixpath
import random
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import apache_beam as beam
import tensorflow as tf
from google.protobuf import any_pb2, json_format, struct_pb2
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.example_gen import write_split
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.components.util import examples_utils
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs

from components import contract as contract_lib
from components import features as F
from components import spans
from components.contract import DataContract, Feature

_Attributes = Dict[str, tf.train.Feature]  # one item's (or user's) encoded features by example key
SPREAD_BUCKETS = 1024  # keys the records are spread over: the parallelism a distributed runner can use


class InputError(ValueError):
    """A malformed input file; the message names the file and the record."""


def _bytes(values: Iterable[str]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode("utf-8") for v in values]))


def _int64(values: Iterable[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def _floats(values: Iterable[float]) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


_text = contract_lib.cell_text


def encode(feature: Feature, value, where: str) -> tf.train.Feature:
    """One attribute as the tf.Example feature Transform expects: a number (NaN when missing), one string
    ('' when missing), or the list of values of a multi-valued cell."""
    if feature.kind == contract_lib.NUMERIC:
        number = contract_lib.as_float(value)
        if number is None and not contract_lib.is_missing(value):
            raise InputError(f"{where}: {feature.column} {value!r} is not a number")
        return _floats([math.nan if number is None else number])
    if feature.kind == contract_lib.MULTI:
        if isinstance(value, (list, tuple)):
            parts = [_text(v) for v in value]
        else:
            parts = _text(value).split(feature.separator) if feature.separator else [_text(value)]
        return _bytes([p.strip() for p in parts if p.strip()])
    return _bytes([_text(value)])


def _missing(features: Tuple[Feature, ...]) -> _Attributes:
    return {f.name: encode(f, None, "") for f in features}


def _attributes(row: Mapping, features: Tuple[Feature, ...], where: str) -> _Attributes:
    return {f.name: encode(f, row.get(f.column), where) for f in features}


def timestamp_seconds(value, where: str) -> int:
    """Seconds since the epoch from an integer, a float or an ISO 8601 date/time (UTC when no zone)."""
    text = _text(value)
    try:
        return int(float(text))
    except ValueError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"{where}: timestamp {text!r} is neither a number nor an ISO 8601 date") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return int(moment.timestamp())


def _read_file(path: str) -> Iterable[Dict[str, object]]:
    try:
        yield from contract_lib.read_rows(path)
    except contract_lib.ContractError as e:
        raise InputError(str(e)) from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None


def check_files(data_root: str, contract: DataContract, interactions_pattern: str = "") -> None:
    """Fails fast, before any Beam work, when a file is missing, its columns are not the contract's, or an
    item (user) has two rows: one line naming the file and the id. `interactions_pattern`: where the interactions
    are under data_root when not at contract.interactions_file (one span: span-N/interactions.csv, whose items
    and users are the span's own files when it has them)."""
    pattern = interactions_pattern or contract.interactions_file

    def check(path: str, id_column: str, columns: List[str], duplicates: bool) -> None:
        if not tf.io.gfile.exists(path):
            raise InputError(f"{path}: file not found")
        try:
            contract_lib.check_columns(path, id_column, columns)
        except contract_lib.ContractError as e:
            raise InputError(str(e)) from None
        if duplicates:
            seen = set()
            for number, row in enumerate(_read_file(path), start=1):
                key = _text(row.get(id_column))
                if not key:
                    raise InputError(f"{path}: record {number} has an empty {id_column}")
                if key in seen:
                    raise InputError(f"{path}: {id_column} {key!r} appears in more than one row (record {number})")
                seen.add(key)

    columns = contract.columns
    for pattern_path in tf.io.gfile.glob(posixpath.join(data_root, pattern)) or [posixpath.join(data_root, pattern)]:
        roles = [getattr(columns, r) for r in contract_lib.ROLES if getattr(columns, r)]
        check(pattern_path, roles[0], roles[1:], duplicates=False)
    if contract.items_file:
        check(spans.side_file(data_root, pattern, contract.items_file), columns.item,
              [f.column for f in contract.item_features], duplicates=True)
    if contract.users_file:
        check(spans.side_file(data_root, pattern, contract.users_file), columns.user,
              [f.column for f in contract.user_features], duplicates=True)


def _keyed(row: Mapping, id_column: str, features: Tuple[Feature, ...], path: str) -> Tuple[str, _Attributes]:
    key = _text(row.get(id_column))
    return key, _attributes(row, features, f"{path}: {id_column} {key!r}")


def _to_example(row: Mapping, items: Dict[str, _Attributes], users: Dict[str, _Attributes],
                user_counts: Dict[str, int], item_counts: Dict[str, int], contract: DataContract,
                path: str) -> tf.train.Example:
    columns = contract.columns
    user_id, item_id = _text(row.get(columns.user)), _text(row.get(columns.item))
    where = f"{path}: interaction ({user_id!r}, {item_id!r})"
    if not user_id or not item_id:
        raise InputError(f"{path}: empty {columns.user} or {columns.item} in record {dict(row)!r}")
    feature = {
        F.USER_ID: _bytes([user_id]),
        F.ITEM_ID: _bytes([item_id]),
        F.USER_ACTIVITY: _bytes([F.count_bucket(user_counts[user_id], F.ACTIVITY_EDGES)]),
        F.ITEM_POPULARITY: _bytes([F.count_bucket(item_counts[item_id], F.POPULARITY_EDGES)]),
    }
    if columns.rating:
        rating = contract_lib.as_float(row.get(columns.rating))
        if rating is None:
            raise InputError(f"{where}: rating {row.get(columns.rating)!r} is not a number")
        feature[F.RATING] = _floats([rating])
    if columns.timestamp:
        feature[F.TIMESTAMP] = _int64([timestamp_seconds(row.get(columns.timestamp), where)])
    if columns.weight:
        weight = contract_lib.as_float(row.get(columns.weight))
        if weight is None or weight < 0:
            raise InputError(f"{where}: weight {row.get(columns.weight)!r} is not a number >= 0")
        feature[F.WEIGHT] = _floats([weight])
    feature.update(items.get(item_id) or _missing(contract.used(contract.item_features)))
    feature.update(users.get(user_id) or _missing(contract.used(contract.user_features)))
    return tf.train.Example(features=tf.train.Features(feature=feature))


def _side_table(pipeline: beam.Pipeline, name: str, path: str, id_column: str, features: Tuple[Feature, ...]):
    if not path:
        return pipeline | f"No{name}" >> beam.Create([])
    return (pipeline
            | f"{name}Path" >> beam.Create([path])
            | f"Read{name}" >> beam.FlatMap(_read_file)
            | f"Key{name}" >> beam.Map(_keyed, id_column, features, path))


def _read_interactions(pipeline: beam.Pipeline, exec_properties: Dict[str, Any], split_pattern: str):
    """(rows, contract, interactions path): the interaction records as dicts, spread over the workers."""
    input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
    contract = contract_of(exec_properties)
    if spans.is_span_pattern(split_pattern):  # on Kubeflow the driver picks the span: never read a half-written one
        try:
            spans.require_complete(posixpath.join(input_base, posixpath.dirname(split_pattern)))
        except spans.SpanError as e:
            raise InputError(str(e)) from None
    check_files(input_base, contract, split_pattern)
    interactions_path = posixpath.join(input_base, split_pattern)
    paths = sorted(tf.io.gfile.glob(interactions_path)) or [interactions_path]
    role_columns = tuple(c for c in (getattr(contract.columns, r) for r in contract_lib.ROLES) if c)
    # Whole records per file (a quoted field may hold a newline), then spread over the workers.
    rows = (pipeline
            | "InteractionFiles" >> beam.Create(paths)
            | "ReadInteractions" >> beam.FlatMap(_read_file)
            | "Spread" >> _Spread(role_columns))
    return rows, contract, interactions_path


def _packed(row: Mapping, columns: Tuple[str, ...]) -> bytes:
    return pickle.dumps(tuple(row.get(c) for c in columns), protocol=pickle.HIGHEST_PROTOCOL)


def _unpacked(keyed: Tuple[int, Iterable[bytes]], columns: Tuple[str, ...]) -> Iterable[Dict[str, object]]:
    for packed in keyed[1]:
        yield dict(zip(columns, pickle.loads(packed)))


@beam.ptransform_fn
def _Spread(rows, columns: Tuple[str, ...]):  # pylint: disable=invalid-name
    """The records over SPREAD_BUCKETS random keys, each shuffled as one bytes value of the role columns only.
    The DirectRunner holds a shuffle in memory as decoded values: Beam's Reshuffle kept a row dict and a
    timestamp tuple per record there (1M interactions: ExampleGen's peak 4.6 GB with it, 4.4 GB with this)."""
    return (rows
            | "Pack" >> beam.Map(lambda row: (random.randrange(SPREAD_BUCKETS), _packed(row, columns)))
            | "Group" >> beam.GroupByKey()
            | "Unpack" >> beam.FlatMap(_unpacked, columns))


def _join(pipeline: beam.Pipeline, rows, contract: DataContract, exec_properties: Dict[str, Any],
          interactions_path: str, split_pattern: str):
    """The rows as tf.Examples with their items' and users' attributes and activity buckets (side inputs)."""
    input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
    items = _side_table(pipeline, "Items",
                        contract.items_file and spans.side_file(input_base, split_pattern, contract.items_file),
                        contract.columns.item, contract.used(contract.item_features))
    users = _side_table(pipeline, "Users",
                        contract.users_file and spans.side_file(input_base, split_pattern, contract.users_file),
                        contract.columns.user, contract.used(contract.user_features))
    user_column, item_column = contract.columns.user, contract.columns.item
    user_counts = (rows | "Users" >> beam.Map(lambda r: _text(r.get(user_column)))
                   | "CountUsers" >> beam.combiners.Count.PerElement())
    item_counts = (rows | "Items" >> beam.Map(lambda r: _text(r.get(item_column)))
                   | "CountItems" >> beam.combiners.Count.PerElement())
    return rows | "Join" >> beam.Map(
        _to_example, beam.pvalue.AsDict(items), beam.pvalue.AsDict(users), beam.pvalue.AsDict(user_counts),
        beam.pvalue.AsDict(item_counts), contract, interactions_path)


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(tf.train.Example)
def _JoinedRatingsToExample(  # pylint: disable=invalid-name
    pipeline: beam.Pipeline, exec_properties: Dict[str, Any], split_pattern: str
) -> beam.pvalue.PCollection:
    rows, contract, interactions_path = _read_interactions(pipeline, exec_properties, split_pattern)
    return _join(pipeline, rows, contract, exec_properties, interactions_path, split_pattern)


def _row_user_time(row: Mapping, contract: DataContract, path: str) -> Tuple[str, int]:
    """(user id, timestamp seconds) of an interaction record, as _to_example writes them."""
    columns = contract.columns
    user_id = _text(row.get(columns.user))
    where = f"{path}: interaction ({user_id!r}, {_text(row.get(columns.item))!r})"
    return user_id, timestamp_seconds(row.get(columns.timestamp), where)


SPLIT_HASH, SPLIT_TIME, SPLIT_USER_TIME, SPLIT_LAST_ONE, SPLIT_USER_HASH = (
    F.SPLIT_HASH, F.SPLIT_TIME, F.SPLIT_USER_TIME, F.SPLIT_LAST_ONE, F.SPLIT_USER_HASH)
SPLITS = (SPLIT_HASH, SPLIT_TIME, SPLIT_USER_TIME, SPLIT_LAST_ONE, SPLIT_USER_HASH)
HASH_SPLITS = (SPLIT_HASH, SPLIT_USER_HASH)  # sized by the output config's hash buckets
# A user's history is split only from this length on (one interaction each for train, validation, eval).
MIN_HISTORY_TO_SPLIT = 3
_TRAIN, _VALIDATION, _EVAL = range(3)  # partition numbers, in F.SPLIT_NAMES order
_EVAL_FRACTION, _VALIDATION_FRACTION, _CONTRACT = "eval_fraction", "validation_fraction", "contract"
TIME_SPLITS = (SPLIT_TIME, SPLIT_USER_TIME, SPLIT_LAST_ONE)


def custom_config(contract: DataContract, kind: str, eval_fraction: float,
                  validation_fraction: float) -> example_gen_pb2.CustomConfig:
    """The ExampleGen custom_config: the data contract and the split (hash buckets still size the hash split)."""
    if kind not in SPLITS:
        raise ValueError(f"unknown split {kind!r}; choose one of: {', '.join(SPLITS)}")
    if kind in TIME_SPLITS and not contract.has_timestamp:
        raise ValueError(f"split {kind!r} orders interactions by time, but {contract.interactions_file} has no "
                         f"timestamp column (use --split hash, or name it with --timestamp-col)")
    for name, value in ((_EVAL_FRACTION, eval_fraction), (_VALIDATION_FRACTION, validation_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if eval_fraction + validation_fraction >= 1.0:
        raise ValueError(f"eval and validation fractions leave nothing to train on ({eval_fraction} + "
                         f"{validation_fraction})")
    options = struct_pb2.Struct()
    options.update({"split": kind, _EVAL_FRACTION: eval_fraction, _VALIDATION_FRACTION: validation_fraction,
                    _CONTRACT: contract.to_json()})
    packed = any_pb2.Any()
    packed.Pack(options)
    return example_gen_pb2.CustomConfig(custom_config=packed)


def _options(exec_properties: Dict[str, Any]) -> struct_pb2.Struct:
    raw = exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY)
    options = struct_pb2.Struct()
    if raw:
        config = json_format.Parse(raw, example_gen_pb2.CustomConfig()) if isinstance(raw, str) else raw
        config.custom_config.Unpack(options)
    return options


def contract_of(exec_properties: Dict[str, Any]) -> DataContract:
    options = _options(exec_properties)
    if _CONTRACT not in options:
        raise ValueError("ExampleGen needs the data contract in its custom_config (example_gen.custom_config)")
    return DataContract.from_json(options[_CONTRACT])


def _split_options(exec_properties: Dict[str, Any]) -> Tuple[str, float, float]:
    options = _options(exec_properties)
    if "split" not in options:
        return SPLIT_HASH, 0.0, 0.0
    validation = float(options[_VALIDATION_FRACTION]) if _VALIDATION_FRACTION in options else 0.0
    return options["split"], float(options[_EVAL_FRACTION]), validation


def _timestamp(example: tf.train.Example) -> int:
    return example.features.feature[F.TIMESTAMP].int64_list.value[0]


def _user(example: tf.train.Example) -> bytes:
    return example.features.feature[F.USER_ID].bytes_list.value[0]


def _first_at_or_after(timestamps: List[int], newest: int, end: int) -> int:
    """Index where the `newest` last of timestamps[:end] (sorted) begin, moved back to the first of a run of ties."""
    if newest <= 0 or end <= 0:
        return end
    cutoff = timestamps[max(0, end - newest)]
    return next(i for i in range(end) if timestamps[i] >= cutoff)


_NEVER = 2 ** 63 - 1  # a cut-off no timestamp reaches


def _user_cutoffs(keyed: Tuple[str, Iterable[int]], eval_fraction: float, validation_fraction: float,
                  last_one: bool) -> Tuple[str, Tuple[int, int]]:
    """(user, (first validation timestamp, first eval timestamp)) from one user's timestamps: the newest fraction
    (or the newest one) is eval, the next newest validation; ties stay together, and the train part is never
    emptied by them. Only (user, timestamp) pairs are grouped: the examples themselves stream past."""
    user, timestamps = keyed
    history = sorted(timestamps)
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
    eval_from = history[first_eval] if first_eval < n else _NEVER
    validation_from = history[first_validation] if first_validation < first_eval else eval_from
    return user, (validation_from, eval_from)


def _hash_partition(example: tf.train.Example, bounds: List[int]) -> int:
    """Partition of an interaction by a hash of who, what and when only (TFX's hash split hashes the whole
    example): editing an item's attributes or adding a column never moves an interaction to another split,
    so runs on refreshed data gate their models on the same eval interactions."""
    feature = example.features.feature
    when = feature[F.TIMESTAMP].int64_list.value if F.TIMESTAMP in feature else []
    key = b"\x1f".join([_user(example), feature[F.ITEM_ID].bytes_list.value[0], str(list(when)).encode()])
    bucket = int(hashlib.sha256(key).hexdigest(), 16) % bounds[-1]
    return next(i for i, bound in enumerate(bounds) if bucket < bound)


def _user_partition(example: tf.train.Example, bounds: List[int], span: int) -> int:
    """Partition of a user's whole span by a hash of the user and the span: a user held out today is trained on
    (and is history) on other days."""
    key = b"\x1f".join([_user(example), str(span).encode()])
    bucket = int(hashlib.sha256(key).hexdigest(), 16) % bounds[-1]
    return next(i for i, bound in enumerate(bounds) if bucket < bound)


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

    def Do(self, input_dict, output_dict, exec_properties: Dict[str, Any]) -> None:
        """TFX's ExampleGen Do, less the global Reshuffle its WriteSplit puts before the writer: on the
        DirectRunner that shuffle held every serialized example of the run in memory at once (10M interactions:
        a 16.8 GB peak). The records are already spread over SPREAD_BUCKETS random buckets before the join, and
        the Trainer shuffles what it reads; the output format and artifact properties are TFX's own."""
        self._log_startup(input_dict, output_dict, exec_properties)
        input_config = json_format.Parse(exec_properties[standard_component_specs.INPUT_CONFIG_KEY],
                                         example_gen_pb2.Input())
        output_config = json_format.Parse(exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY],
                                          example_gen_pb2.Output())
        examples = output_dict[standard_component_specs.EXAMPLES_KEY]
        artifact_utils.get_single_instance(examples).split_names = artifact_utils.encode_split_names(
            example_gen_utils.generate_output_split_names(input_config, output_config))
        file_format = exec_properties.get(standard_component_specs.OUTPUT_FILE_FORMAT_KEY)
        if file_format not in (None, example_gen_pb2.FILE_FORMAT_UNSPECIFIED,
                               example_gen_pb2.FORMAT_TFRECORDS_GZIP):
            raise ValueError(f"ExampleGen writes gzipped TFRecords; output_file_format {file_format} is not supported")
        with self._make_beam_pipeline() as pipeline:
            for name, split in self.GenerateExamplesByBeam(pipeline, exec_properties).items():
                _ = (split
                     | f"Serialize[{name}]" >> beam.ParDo(write_split.MaybeSerialize())
                     | f"Write[{name}]" >> beam.io.WriteToTFRecord(
                         posixpath.join(artifact_utils.get_split_uri(examples, name),
                                      write_split.DEFAULT_TF_RECORD_FILE_NAME), file_name_suffix=".gz"))
        payload_format = exec_properties.get(standard_component_specs.OUTPUT_DATA_FORMAT_KEY)
        for artifact in examples:
            if payload_format:
                examples_utils.set_payload_format(artifact, payload_format)
            if file_format:
                examples_utils.set_file_format(artifact, write_split.to_file_format_str(file_format))

    def GenerateExamplesByBeam(self, pipeline: beam.Pipeline, exec_properties: Dict[str, Any]):
        kind, eval_fraction, validation_fraction = _split_options(exec_properties)
        input_config = json_format.Parse(exec_properties[standard_component_specs.INPUT_CONFIG_KEY],
                                         example_gen_pb2.Input())
        output_config = json_format.Parse(exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY],
                                          example_gen_pb2.Output())
        names = example_gen_utils.generate_output_split_names(input_config, output_config)
        if sorted(names) != sorted(F.SPLIT_NAMES):
            raise ValueError(f"output splits must be {', '.join(F.SPLIT_NAMES)} (got {', '.join(names)})")
        # The split's cut-offs come from the records' (user, timestamp) alone, so the examples stream from the
        # join to the writer: a cut-off computed from the examples would make the runner hold all of them.
        # TFX's driver has already put the span's number into a `{SPAN}` pattern (components/spans.py).
        split_pattern = input_config.splits[0].pattern
        rows, contract, interactions_path = _read_interactions(pipeline, exec_properties, split_pattern)
        examples = _join(pipeline, rows, contract, exec_properties, interactions_path, split_pattern)
        if kind in HASH_SPLITS:
            buckets = {split.name: split.hash_buckets for split in output_config.split_config.splits}
            bounds = list(itertools.accumulate(buckets[name] for name in F.SPLIT_NAMES))
            if kind == SPLIT_HASH:
                tagged = examples | "ByHash" >> beam.Map(lambda e: (_hash_partition(e, bounds), e))
            else:  # TFX's driver has resolved the span (0 when the input has none)
                span = int(exec_properties.get(example_gen_utils.SPAN_PROPERTY_NAME) or 0)
                tagged = examples | "ByUserHash" >> beam.Map(lambda e: (_user_partition(e, bounds, span), e))
        else:
            user_times = rows | "UserTimestamps" >> beam.Map(_row_user_time, contract, interactions_path)
            if kind in (SPLIT_USER_TIME, SPLIT_LAST_ONE):
                cutoffs = (user_times
                           | "GroupByUser" >> beam.GroupByKey()
                           | "UserCutoffs" >> beam.Map(_user_cutoffs, eval_fraction, validation_fraction,
                                                       kind == SPLIT_LAST_ONE))
                tagged = examples | "ByUserCutoffs" >> beam.Map(
                    lambda e, by_user: _by_cutoffs(e, by_user[_user(e).decode("utf-8")]), beam.pvalue.AsDict(cutoffs))
            else:
                cutoffs = (user_times
                           | "Timestamps" >> beam.Values()
                           | "Quantiles" >> beam.ApproximateQuantiles.Globally(101)
                           | "Cutoffs" >> beam.Map(_global_cutoffs, eval_fraction, validation_fraction))
                tagged = examples | "ByCutoffs" >> beam.Map(_by_cutoffs, beam.pvalue.AsSingleton(cutoffs))
        parts = tagged | "Partition" >> beam.Partition(lambda pair, _: pair[0], len(F.SPLIT_NAMES))
        return {name: part | f"{name.capitalize()}Examples" >> beam.Values()
                for name, part in zip(F.SPLIT_NAMES, parts)}


class RatingsExampleGen(FileBasedExampleGen):
    """FileBasedExampleGen whose executor joins the items' and users' attributes into every interaction."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
