"""The first run's inferred schema, curated and written where the user reviews and commits it.

On a new data root SchemaGen infers the schema from statistics; `CuratedSchemaExport` adds what
inference cannot know (which features serving requests lack, which features to watch for drift) and
writes the result once. Later runs import that file (ImportSchemaGen), so ExampleValidator and the
data gate check every span against a contract the user owns. Domains are never added here: a
dataset's domains come from its data, and the user edits them. (No `from __future__ import
annotations` here: TFX reads the component signature's real types.)
"""


import datetime
import json
import posixpath
from typing import List, Mapping, Optional, Sequence

import tensorflow as tf
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx import v1 as tfx
from tfx.types import artifact_utils
from tfx.utils import io_utils

from components import features as F
from components.atomic_io import atomic_write

TRAINING = "TRAINING"
SERVING = "SERVING"
DEFAULT_DRIFT_THRESHOLD = 0.2
# Training/serving skew (components/serving_skew.py) is watched on the ids requests name: an L-infinity distance
# of 0.1 is one id holding a tenth more of the traffic than of the training data (or the reverse).
SKEW_FEATURES = (F.USER_ID, F.ITEM_ID)
# Ids are open sets: SchemaGen infers a string domain for them on small data, which would refuse every new user or
# item of the next span; curation drops it.
OPEN_DOMAINS = (F.USER_ID, F.ITEM_ID)
DEFAULT_SKEW_THRESHOLD = 0.1


def _comparator(feature: schema_pb2.Feature, threshold: float) -> Optional[schema_pb2.FeatureComparator]:
    """L-infinity for strings, Jensen-Shannon divergence for numbers; None for a type without a distribution."""
    comparator = schema_pb2.FeatureComparator()
    if feature.type == schema_pb2.BYTES:
        comparator.infinity_norm.threshold = threshold
    elif feature.type in (schema_pb2.INT, schema_pb2.FLOAT):
        comparator.jensen_shannon_divergence.threshold = threshold
    else:  # STRUCT and unknown types have no distribution to compare
        return None
    return comparator


def _drop_string_domain(schema: schema_pb2.Schema, name: str, keep) -> None:
    """Removes the top-level string domain `name` unless another feature (in `keep`) still refers to it."""
    users = [f for f in keep if f.WhichOneof("domain_info") == "domain" and f.domain == name]
    if len(users) <= 1:
        remaining = [d for d in schema.string_domain if d.name != name]
        del schema.string_domain[:]
        schema.string_domain.extend(remaining)


def _set_drift_comparator(feature: schema_pb2.Feature, threshold: float) -> None:
    """L-infinity for strings, Jensen-Shannon divergence for numbers.

    StatisticsGen computes numeric statistics for INT features (it runs without a schema), so an
    L-infinity comparator on an int feature, even one marked categorical, measures 0 and never
    fires (checked with TFDV 1.16); Jensen-Shannon divergence compares their histograms instead.
    """
    comparator = _comparator(feature, threshold)
    if comparator is not None:
        feature.drift_comparator.CopyFrom(comparator)


def curate(
    schema: schema_pb2.Schema,
    *,
    not_in_serving: Sequence[str],
    drift_features: Sequence[str],
    drift_threshold: float = DEFAULT_DRIFT_THRESHOLD,
    value_ranges: Optional[Mapping[str, Sequence[float]]] = None,
    skew_features: Sequence[str] = SKEW_FEATURES,
    skew_threshold: float = DEFAULT_SKEW_THRESHOLD,
) -> schema_pb2.Schema:
    """A copy of `schema` with TRAINING/SERVING environments, drift and skew comparators and value ranges; idempotent.

    `not_in_serving`: features absent from serving requests (labels, timestamp, weights, slices).
    `drift_features`: features compared with the previous run's statistics; `skew_features`: with the statistics
    of the served model's request log. Names the schema lacks are ignored: not every dataset has every feature.
    Domains are left as inferred, except that the ids' (OPEN_DOMAINS) are dropped and `value_ranges` ({name:
    (min, max)}, e.g. the rating scale the data contract measured) become float domains, so a rating outside the
    data's own scale is an anomaly.
    """
    if not 0.0 < drift_threshold <= 1.0:
        raise ValueError(f"drift_threshold must be in (0, 1], got {drift_threshold!r}")
    curated = schema_pb2.Schema()
    curated.CopyFrom(schema)
    for environment in (TRAINING, SERVING):
        if environment not in curated.default_environment:
            curated.default_environment.append(environment)
    features = {feature.name: feature for feature in curated.feature}
    for name in not_in_serving:
        feature = features.get(name)
        if feature is not None and SERVING not in feature.not_in_environment:
            feature.not_in_environment.append(SERVING)
    for name in drift_features:
        feature = features.get(name)
        if feature is not None:
            _set_drift_comparator(feature, drift_threshold)
    for name in OPEN_DOMAINS:  # every day brings new users and items: a domain inferred from one day refuses the next
        feature = features.get(name)
        if feature is not None and feature.WhichOneof("domain_info"):
            if feature.WhichOneof("domain_info") == "domain":
                _drop_string_domain(curated, feature.domain, keep=features.values())
            feature.ClearField(feature.WhichOneof("domain_info"))
    for name in skew_features:  # compared with the request log's ids (`recsys run --serving-log`)
        feature = features.get(name)
        comparator = _comparator(feature, skew_threshold) if feature is not None else None
        if comparator is not None:
            feature.skew_comparator.CopyFrom(comparator)
    for name, (low, high) in (value_ranges or {}).items():
        feature = features.get(name)
        if feature is not None and feature.type == schema_pb2.FLOAT:
            feature.float_domain.min, feature.float_domain.max = float(low), float(high)
    return curated


_EDIT_NOTE = ("# Edit it when the data legitimately changes, e.g. remove a feature's string_domain if new categories\n"
              "# are expected, or raise a drift threshold.\n")


def schema_text(schema: schema_pb2.Schema, *, source: str = "") -> str:
    """The text proto with a header telling the user where it came from and what to do with it."""
    origin = f" on {source}" if source else ""
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = (
        f"# Data contract inferred by TFX SchemaGen from the statistics of the first pipeline run{origin}\n"
        f"# ({when}), then curated: features absent from serving requests are marked\n"
        "# not_in_environment: \"SERVING\"; drift_comparator thresholds compare each run with the previous one,\n"
        "# skew_comparator thresholds the training data with the ids serving was asked about (--serving-log).\n"
        "# Review this file and commit it (`recsys schema export` copies it and contract.json into the repository):\n"
        "# later runs validate every span against it (ImportSchemaGen) and the data gate stops a run whose data\n"
        "# breaks it.\n"
    )
    return header + _EDIT_NOTE + text_format.MessageToString(schema)


def reviewed_schema_text(schema: schema_pb2.Schema) -> str:
    """The text proto as committed to a repository (`recsys schema export`): the header names no machine's path
    and no date, so the file changes in review only when the schema does."""
    header = (
        "# The reviewed schema of the data described by contract.json beside it: inferred by TFX SchemaGen from\n"
        "# the statistics of a first pipeline run, curated by CuratedSchemaExport (features absent from serving\n"
        "# requests are marked not_in_environment: \"SERVING\"; drift_comparator thresholds compare each run with\n"
        "# the previous one, skew_comparator thresholds the training data with the ids serving was asked about),\n"
        "# then copied here by `recsys schema export`. Runs given this directory with --schema-dir validate\n"
        "# every span against it (ImportSchemaGen); the data gate stops a run that breaks it.\n"
    )
    review = "# Review a change to it like a change to code.\n"
    return header + _EDIT_NOTE + review + text_format.MessageToString(schema)


def write_schema_text(schema: schema_pb2.Schema, path: str, *, source: str = "") -> None:
    """Writes the schema as a commented text proto, atomically (a reader never sees half a file)."""
    directory = posixpath.dirname(path)
    if directory:
        tf.io.gfile.makedirs(directory)
    atomic_write(path, schema_text(schema, source=source))


def _names(parameter: str, value: str) -> List[str]:
    try:
        names = json.loads(value)
    except json.JSONDecodeError as error:
        raise ValueError(f"{parameter} must be a JSON list of feature names, got {value!r} ({error.msg})") from None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ValueError(f"{parameter} must be a JSON list of feature names, got {value!r}")
    return names


@tfx.dsl.components.component
def CuratedSchemaExport(
    schema: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Schema],
    destination: tfx.dsl.components.Parameter[str],
    not_in_serving: tfx.dsl.components.Parameter[str],
    drift_features: tfx.dsl.components.Parameter[str],
    drift_threshold: tfx.dsl.components.Parameter[float] = DEFAULT_DRIFT_THRESHOLD,
    source: tfx.dsl.components.Parameter[str] = "",
    value_ranges: tfx.dsl.components.Parameter[str] = "{}",
) -> None:
    """Curates the inferred schema and writes it to `destination`, unless a curated copy is already there."""
    serving_absent = _names("not_in_serving", not_in_serving)
    watched = _names("drift_features", drift_features)
    if tf.io.gfile.exists(destination):
        print(f"curated schema kept (not overwritten): {destination}")
        return
    inferred = io_utils.SchemaReader().read(io_utils.get_only_uri_in_dir(artifact_utils.get_single_uri([schema])))
    try:
        ranges = json.loads(value_ranges or "{}")
    except ValueError:
        raise ValueError(f"value_ranges must be a JSON object of [min, max] pairs, got {value_ranges!r}") from None
    curated = curate(inferred, not_in_serving=serving_absent, drift_features=watched, drift_threshold=drift_threshold,
                     value_ranges=ranges)
    write_schema_text(curated, destination, source=source)
    print(f"curated schema written, review and commit it: {destination}")
