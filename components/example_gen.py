"""ExampleGen that joins item attributes into every rating, so Transform and Trainer see them.

The input base holds `interactions.csv` (matched by the split pattern) and `items.csv`. Items
are a Beam side input, which keeps the join distributed: interactions are never collected.
"""

from __future__ import annotations

import csv
import posixpath
from typing import Any, Dict, Iterable, Tuple

import apache_beam as beam
import tensorflow as tf
from tfx.types import standard_component_specs
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec

from components import features as F

_ItemRow = Tuple[str, int, Tuple[str, ...]]  # title, year, genres


class InputError(ValueError):
    """A malformed input file; the message names the file and the line."""


def _csv_rows(path: str, expected: Tuple[str, ...]) -> beam.PTransform:
    @beam.ptransform_fn
    def _read(pipeline):
        return (
            pipeline
            | "Read" >> beam.io.ReadFromText(path, skip_header_lines=1)
            | "Parse" >> beam.Map(_parse_line, path, len(expected))
        )

    return _read()


def _parse_line(line: str, path: str, width: int) -> list:
    row = next(csv.reader([line]))
    if len(row) != width:
        raise InputError(f"{path}: expected {width} columns, got {len(row)} in row {line!r}")
    return row


def check_header(path: str, expected: Tuple[str, ...]) -> None:
    """Fails fast, before any Beam work, when a file is missing or its columns are not the contract."""
    if not tf.io.gfile.exists(path):
        raise InputError(f"{path}: file not found")
    with tf.io.gfile.GFile(path, "r") as f:
        header = next(csv.reader([f.readline().strip()]), [])
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


def _to_example(row: list, items: Dict[str, _ItemRow], path: str) -> tf.train.Example:
    user_id, item_id, rating, timestamp = row
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
    return (
        pipeline
        | "ReadInteractions" >> _csv_rows(interactions_path, F.INTERACTION_COLUMNS)
        | "JoinItems" >> beam.Map(_to_example, beam.pvalue.AsDict(items), interactions_path)
    )


class Executor(BaseExampleGenExecutor):
    """Beam executor: CSV interactions joined with CSV items, to tf.Examples."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        return _JoinedRatingsToExample


class RatingsExampleGen(FileBasedExampleGen):
    """FileBasedExampleGen whose executor joins `items.csv` into `interactions.csv` rows."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
