"""The curated schema: serving environment, drift comparators, domains untouched, written once and never overwritten."""

import os

import numpy as np
import pandas as pd
import pytest
import tensorflow_data_validation as tfdv
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx.types import standard_artifacts

from components import schema_curation as C

NOT_IN_SERVING = ["rating", "timestamp", "weight"]  # no 'weight' column here: ignored
DRIFT = ["category", "price", "brand"]  # no 'brand' column here: ignored


def _frame(n: int = 2000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "user_id": [f"u{i}" for i in rng.integers(0, 600, n)],  # too many values for an inferred domain
        "category": rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1]),
        "price": rng.normal(10.0, 2.0, n),
        "rating": rng.uniform(0.5, 5.0, n),
        "timestamp": rng.integers(0, 10**9, n),
    })


@pytest.fixture(scope="module")
def statistics():
    return tfdv.generate_statistics_from_dataframe(_frame())


@pytest.fixture(scope="module")
def inferred(statistics) -> schema_pb2.Schema:
    return tfdv.infer_schema(statistics)


def _feature(schema: schema_pb2.Schema, name: str) -> schema_pb2.Feature:
    return next(feature for feature in schema.feature if feature.name == name)


def test_curate_sets_environments_and_comparators_and_leaves_domains(inferred):
    original = inferred.SerializeToString()
    curated = C.curate(inferred, not_in_serving=NOT_IN_SERVING, drift_features=DRIFT, drift_threshold=0.15)

    assert inferred.SerializeToString() == original  # a copy: the input is untouched
    assert list(curated.default_environment) == ["TRAINING", "SERVING"]
    assert list(_feature(curated, "rating").not_in_environment) == ["SERVING"]
    assert list(_feature(curated, "timestamp").not_in_environment) == ["SERVING"]
    assert not _feature(curated, "category").not_in_environment
    category = _feature(curated, "category").drift_comparator
    assert category.HasField("infinity_norm") and not category.HasField("jensen_shannon_divergence")
    assert category.infinity_norm.threshold == pytest.approx(0.15)
    price = _feature(curated, "price").drift_comparator
    assert price.HasField("jensen_shannon_divergence") and not price.HasField("infinity_norm")
    assert price.jensen_shannon_divergence.threshold == pytest.approx(0.15)
    for name in ("user_id", "rating", "timestamp"):
        assert not _feature(curated, name).HasField("drift_comparator")
    # Domains exactly as inferred: category's 3 values kept, none added for the 600 user ids.
    assert list(curated.string_domain) == list(inferred.string_domain)
    assert [d.name for d in curated.string_domain] == ["category"]
    assert not _feature(curated, "user_id").domain and not _feature(curated, "user_id").HasField("string_domain")
    assert {f.name for f in curated.feature} == {f.name for f in inferred.feature}  # no 'weight'/'brand' invented


def test_ids_get_no_domain_and_a_skew_comparator():
    """SchemaGen infers a string domain for ids when there are few: tomorrow's span, with new users and items,
    would then be refused. Curation drops it (the other domains stay) and watches the ids for serving skew."""
    frame = pd.DataFrame({"user_id": [f"u{i % 30}" for i in range(600)], "item_id": [f"i{i % 20}" for i in range(600)],
                          "category": ["a", "b", "c"] * 200})
    inferred = tfdv.infer_schema(tfdv.generate_statistics_from_dataframe(frame))
    assert {d.name for d in inferred.string_domain} >= {"user_id", "item_id"}  # what SchemaGen makes of few ids
    curated = C.curate(inferred, not_in_serving=[], drift_features=[])
    assert [d.name for d in curated.string_domain] == ["category"]
    for name in ("user_id", "item_id"):
        feature = _feature(curated, name)
        assert not feature.WhichOneof("domain_info")
        assert feature.skew_comparator.infinity_norm.threshold == pytest.approx(C.DEFAULT_SKEW_THRESHOLD)
    assert _feature(curated, "category").domain == "category"
    tomorrow = tfdv.generate_statistics_from_dataframe(pd.DataFrame(
        {"user_id": ["u99", "u1"], "item_id": ["i77", "i1"], "category": ["a", "b"]}))
    assert not tfdv.validate_statistics(tomorrow, curated).anomaly_info  # new ids are not anomalies


def test_curate_is_idempotent(inferred):
    once = C.curate(inferred, not_in_serving=NOT_IN_SERVING, drift_features=DRIFT)
    twice = C.curate(once, not_in_serving=NOT_IN_SERVING, drift_features=DRIFT)
    assert twice == once
    assert list(_feature(twice, "rating").not_in_environment) == ["SERVING"]


def test_serving_data_without_labels_passes_only_the_curated_schema(inferred):
    serving = tfdv.generate_statistics_from_dataframe(_frame(500, seed=1).drop(columns=["rating", "timestamp"]))
    curated = C.curate(inferred, not_in_serving=NOT_IN_SERVING, drift_features=DRIFT)

    assert not tfdv.validate_statistics(serving, curated, environment="SERVING").anomaly_info
    missing = tfdv.validate_statistics(serving, curated, environment="TRAINING").anomaly_info
    assert set(missing) == {"rating", "timestamp"}


def test_curate_rejects_a_threshold_outside_0_1(inferred):
    with pytest.raises(ValueError, match="drift_threshold"):
        C.curate(inferred, not_in_serving=[], drift_features=DRIFT, drift_threshold=1.5)


def test_write_schema_text_round_trips_with_a_header(inferred, tmp_path):
    curated = C.curate(inferred, not_in_serving=NOT_IN_SERVING, drift_features=DRIFT)
    path = str(tmp_path / "contract" / "schema.pbtxt")  # the directory is created
    C.write_schema_text(curated, path, source="/data/shop")

    text = open(path).read()
    assert text.startswith("#") and "/data/shop" in text and "commit" in text and "string_domain" in text
    assert text_format.Parse(text, schema_pb2.Schema()) == curated
    assert [name for name in os.listdir(tmp_path / "contract")] == ["schema.pbtxt"]  # no temp file left


def _schema_artifact(schema: schema_pb2.Schema, directory) -> standard_artifacts.Schema:
    """A Schema artifact as SchemaGen leaves it: one schema.pbtxt in the artifact's directory."""
    os.makedirs(directory)
    tfdv.write_schema_text(schema, os.path.join(str(directory), "schema.pbtxt"))
    artifact = standard_artifacts.Schema()
    artifact.uri = str(directory)
    return artifact


def _export(schema_artifact, destination, not_in_serving='["rating", "timestamp"]'):
    executor = C.CuratedSchemaExport.EXECUTOR_SPEC.executor_class()
    executor.Do(
        {"schema": [schema_artifact]},
        {},
        {"destination": destination, "not_in_serving": not_in_serving, "drift_features": '["category", "price"]'},
    )


def test_export_component_writes_once_and_never_overwrites(inferred, tmp_path, capsys):
    destination = str(tmp_path / "root" / "schema" / "schema.pbtxt")
    _export(_schema_artifact(inferred, tmp_path / "inferred_1"), destination)

    written = text_format.Parse(open(destination).read(), schema_pb2.Schema())
    assert written == C.curate(inferred, not_in_serving=["rating", "timestamp"], drift_features=["category", "price"])
    assert capsys.readouterr().out.strip().endswith(destination)

    # The user edits the curated copy; a later first-run-like export must keep the edit.
    edited = open(destination).read().replace("threshold: 0.2", "threshold: 0.35")
    with open(destination, "w") as f:
        f.write(edited)
    other = schema_pb2.Schema()
    other.feature.add(name="something_else", type=schema_pb2.INT)
    _export(_schema_artifact(other, tmp_path / "inferred_2"), destination)
    assert open(destination).read() == edited
    assert "kept" in capsys.readouterr().out


def test_export_component_names_a_bad_list_parameter(inferred, tmp_path):
    destination = str(tmp_path / "schema.pbtxt")
    with pytest.raises(ValueError, match="not_in_serving"):
        _export(_schema_artifact(inferred, tmp_path / "inferred"), destination, not_in_serving="rating,timestamp")
    assert not os.path.exists(destination)
