"""The data gate: ExampleValidator's anomalies and drift from the previous run's statistics stop the run."""

import os
import tempfile

import numpy as np
import pandas as pd
import pytest
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2
from tfx.components.example_validator.executor import DEFAULT_FILE_NAME
from tfx.components.statistics_gen.stats_artifact_utils import BINARY_PB_BASENAME
from tfx.types import artifact_utils, standard_artifacts

from components import data_gate as G
from components.schema_curation import curate

USUAL = [0.6, 0.3, 0.1]


def _statistics(category_p=USUAL, price_mean=10.0, seed=0, n=2000):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "user_id": [f"u{i}" for i in rng.integers(0, 600, n)],
        "category": rng.choice(["a", "b", "c"], n, p=category_p),
        "price": rng.normal(price_mean, 2.0, n),
        "rating": rng.uniform(0.5, 5.0, n),
    })
    return tfdv.generate_statistics_from_dataframe(frame)


@pytest.fixture(scope="module")
def baseline():
    return _statistics()


@pytest.fixture(scope="module")
def schema(baseline) -> schema_pb2.Schema:
    return curate(tfdv.infer_schema(baseline), not_in_serving=["rating"], drift_features=["category", "price"])


def test_a_moved_categorical_distribution_is_drift_naming_the_feature(baseline, schema):
    moved = _statistics(category_p=[0.1, 0.3, 0.6], seed=1)  # 'a' falls from 60% to 10%
    problems = G.drift_problems(moved, baseline, schema)
    assert len(problems) == 1
    assert problems[0].startswith("drift vs the previous run: feature 'category': ")
    assert "above the threshold 0.2" in problems[0]


def test_a_shifted_numeric_feature_is_drift(baseline, schema):
    problems = G.drift_problems(_statistics(price_mean=16.0, seed=1), baseline, schema)
    assert [p.split(":")[1].strip() for p in problems] == ["feature 'price'"]


def test_a_new_sample_of_the_same_data_is_not_drift(baseline, schema):
    assert G.drift_problems(_statistics(seed=1), baseline, schema) == []
    assert G.drift_problems(baseline, baseline, schema) == []


def test_features_without_a_comparator_are_not_compared(baseline):
    unwatched = curate(tfdv.infer_schema(baseline), not_in_serving=["rating"], drift_features=["price"])
    assert G.drift_problems(_statistics(category_p=[0.1, 0.3, 0.6], seed=1), baseline, unwatched) == []


def test_schema_violations_are_left_to_example_validator(baseline, schema):
    """A new category breaks the inferred domain, but only drift is the gate's own finding."""
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({
        "user_id": [f"u{i}" for i in rng.integers(0, 600, 2000)],
        "category": rng.choice(["a", "b", "c", "new"], 2000, p=[0.55, 0.3, 0.1, 0.05]),
        "price": rng.normal(10.0, 2.0, 2000),
        "rating": rng.uniform(0.5, 5.0, 2000),
    })
    current = tfdv.generate_statistics_from_dataframe(frame)
    assert "category" in tfdv.validate_statistics(current, schema).anomaly_info  # ExampleValidator's anomaly
    assert G.drift_problems(current, baseline, schema) == []  # small move, and not a drift finding



def test_features_absent_from_the_previous_run_are_not_drift(baseline, schema, capsys):
    """A feature new since the previous run (or a baseline of other data) has nothing to be compared with."""
    other = tfdv.generate_statistics_from_dataframe(pd.DataFrame({"user_id": ["u1"] * 50, "genre": ["g"] * 50}))
    assert G.drift_problems(baseline, other, schema) == []
    assert "not compared, absent from one of the two runs: category, price" in capsys.readouterr().out

# The component, run through TFX's own executor on artifacts laid out as StatisticsGen,
# ExampleValidator and SchemaGen write them.

def _stats_artifact(stats, directory) -> standard_artifacts.ExampleStatistics:
    artifact = standard_artifacts.ExampleStatistics()
    artifact.uri = str(directory)
    artifact.split_names = artifact_utils.encode_split_names(["train"])
    os.makedirs(os.path.join(str(directory), "Split-train"))
    with open(os.path.join(str(directory), "Split-train", BINARY_PB_BASENAME), "wb") as f:
        f.write(stats.SerializeToString())  # what StatisticsGen writes and tfdv.load_stats_binary reads
    return artifact


def _anomalies_artifact(directory, anomalous_feature: str = "", anomalies=None) -> standard_artifacts.ExampleAnomalies:
    artifact = standard_artifacts.ExampleAnomalies()
    artifact.uri = str(directory)
    artifact.split_names = artifact_utils.encode_split_names(["train"])
    anomalies = anomalies or anomalies_pb2.Anomalies()
    if anomalous_feature:
        anomalies.anomaly_info[anomalous_feature].short_description = "Unexpected string values"
    os.makedirs(os.path.join(str(directory), "Split-train"))
    with open(os.path.join(str(directory), "Split-train", DEFAULT_FILE_NAME), "wb") as f:
        f.write(anomalies.SerializeToString())
    return artifact


def _schema_artifact(schema, directory) -> standard_artifacts.Schema:
    os.makedirs(str(directory))
    tfdv.write_schema_text(schema, os.path.join(str(directory), "schema.pbtxt"))
    artifact = standard_artifacts.Schema()
    artifact.uri = str(directory)
    return artifact


def _gate(inputs, **properties) -> standard_artifacts.ExampleStatistics:
    """Runs the gate; returns the statistics it accepted (what the next run's drift check compares with)."""
    accepted = standard_artifacts.ExampleStatistics()
    # Beside the inputs, inside the test's tmp_path (a bare mkdtemp was left behind in /tmp by every run).
    accepted.uri = tempfile.mkdtemp(prefix="accepted_statistics_", dir=os.path.dirname(inputs["anomalies"].uri))
    G.DataGate.EXECUTOR_SPEC.executor_class().Do({k: [v] for k, v in inputs.items()},
                                                 {"accepted_statistics": [accepted]}, properties)
    return accepted


@pytest.fixture()
def artifacts(tmp_path, baseline, schema):
    return {
        "anomalies": _anomalies_artifact(tmp_path / "anomalies"),
        "statistics": _stats_artifact(_statistics(category_p=[0.1, 0.3, 0.6], seed=1), tmp_path / "stats"),
        "baseline_statistics": _stats_artifact(baseline, tmp_path / "baseline"),
        "schema": _schema_artifact(schema, tmp_path / "schema"),
    }


def test_gate_fails_on_drift_from_the_previous_run(artifacts):
    with pytest.raises(G.DataValidationError, match="drift vs the previous run: feature 'category'") as error:
        _gate(artifacts)
    assert "\n" not in str(error.value)


def test_gate_reports_allowed_drift_as_a_warning(artifacts, capsys):
    _gate(artifacts, allow_drift=True)
    assert "feature 'category'" in capsys.readouterr().out


def test_gate_without_a_baseline_checks_only_the_anomalies(artifacts):
    first_run = {k: v for k, v in artifacts.items() if k != "baseline_statistics"}
    _gate(first_run)
    _gate({"anomalies": artifacts["anomalies"]})  # the inputs are optional, as before


def test_gate_passes_data_like_the_previous_run_and_hands_its_statistics_on(artifacts, tmp_path, baseline):
    artifacts["statistics"] = _stats_artifact(_statistics(seed=1), tmp_path / "same")
    accepted = _gate(artifacts)
    assert sorted(os.listdir(accepted.uri)) == sorted(os.listdir(artifacts["statistics"].uri))
    assert accepted.split_names == artifacts["statistics"].split_names


def test_gate_still_fails_on_example_validator_anomalies(artifacts, tmp_path):
    artifacts["anomalies"] = _anomalies_artifact(tmp_path / "bad", anomalous_feature="category")
    with pytest.raises(G.DataValidationError) as error:
        _gate(artifacts, allow_drift=True)
    message = str(error.value)
    assert "feature 'category' (train split): Unexpected string values" in message
    assert "drift vs the previous run" not in message  # drift allowed: only the anomaly fails the run


def test_gate_names_each_anomaly_in_tfdv_long_words_with_the_allowed_range(tmp_path, baseline):
    """Not TFDV's short "Multiple errors"/"Out-of-range values": what is wrong, the range the schema allows and
    at least how many values lie outside it."""
    schema = curate(tfdv.infer_schema(baseline), not_in_serving=["rating"], drift_features=["category"],
                    value_ranges={"rating": [0.5, 5.0]})
    rng = np.random.default_rng(3)
    n = 2000
    rating = rng.uniform(0.5, 5.0, n)
    rating[: n // 20] = 6.5  # 5 % of the ratings above the scale
    frame = pd.DataFrame({"user_id": [f"u{i}" for i in rng.integers(0, 600, n)],
                          "category": rng.choice(["a", "b", "c", "new"], n, p=[0.5, 0.3, 0.1, 0.1]),
                          "price": rng.normal(10.0, 2.0, n), "rating": rating})
    current = tfdv.generate_statistics_from_dataframe(frame)
    anomalies = tfdv.validate_statistics(current, schema)
    assert {"rating", "category"} <= set(anomalies.anomaly_info)
    artifacts = {"anomalies": _anomalies_artifact(tmp_path / "anomalies", anomalies=anomalies),
                 "statistics": _stats_artifact(current, tmp_path / "stats"),
                 "schema": _schema_artifact(schema, tmp_path / "schema")}
    with pytest.raises(G.DataValidationError) as error:
        _gate(artifacts)
    message = str(error.value)
    assert "\n" not in message and "Multiple errors" not in message and "Out-of-range values" not in message
    rating_problem = message.split("feature 'rating' (train split): ")[1]
    assert rating_problem.startswith("Unexpectedly high value: 6.5>5 (the schema allows [0.5, 5]; at least ")
    share = float(rating_problem.split("at least ")[1].split(" %")[0])
    assert 4.0 <= share <= 5.0, message  # 5 % of the values; a lower bound from the histogram
    assert "feature 'category' (train split): " in message and "new" in message.split("feature 'category'")[1]


@pytest.mark.slow
def test_three_runs_infer_then_import_the_curated_schema_and_stop_on_drift(tmp_path):
    """The wiring the pipeline uses, on CsvExampleGen: run 1 infers and exports the curated schema
    (no baseline yet), run 2 imports it and passes a new sample of the same data, run 3 fails on the
    category whose distribution moved. About 20 s."""
    from tfx import v1 as tfx

    from components.schema_curation import CuratedSchemaExport

    data, curated = str(tmp_path / "data"), str(tmp_path / "contract" / "schema.pbtxt")
    os.makedirs(data)

    def pipeline():
        example_gen = tfx.components.CsvExampleGen(input_base=data)
        statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
        first_run = not os.path.exists(curated)
        schema_gen = (tfx.components.SchemaGen(statistics=statistics_gen.outputs["statistics"]) if first_run
                      else tfx.components.ImportSchemaGen(schema_file=curated))
        validator = tfx.components.ExampleValidator(
            statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
        previous = tfx.dsl.Resolver(
            strategy_class=tfx.dsl.experimental.LatestArtifactStrategy,
            statistics=tfx.dsl.Channel(type=standard_artifacts.ExampleStatistics,
                                       producer_component_id="DataGate", output_key="accepted_statistics"),
        ).with_id("previous_statistics")
        statistics_gen.add_upstream_node(previous)
        gate = G.DataGate(anomalies=validator.outputs["anomalies"], statistics=statistics_gen.outputs["statistics"],
                          baseline_statistics=previous.outputs["statistics"],
                          schema=schema_gen.outputs["schema"]).with_id("DataGate")
        components = [example_gen, statistics_gen, schema_gen, validator, previous, gate]
        if first_run:
            components.append(CuratedSchemaExport(
                schema=schema_gen.outputs["schema"], destination=curated, not_in_serving='["rating"]',
                drift_features='["category", "price"]', source=data))
        return tfx.dsl.Pipeline(
            pipeline_name="drift", pipeline_root=str(tmp_path / "root"), components=components,
            metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
                str(tmp_path / "mlmd.sqlite")))

    def run(category_p, seed):
        rng = np.random.default_rng(seed)
        pd.DataFrame({
            "user_id": [f"u{i}" for i in rng.integers(0, 600, 2000)],
            "category": rng.choice(["a", "b", "c"], 2000, p=category_p),
            "price": rng.normal(10.0, 2.0, 2000),
            "rating": rng.uniform(0.5, 5.0, 2000),
        }).to_csv(os.path.join(data, "data.csv"), index=False)
        tfx.orchestration.LocalDagRunner().run(pipeline())

    run(USUAL, seed=0)
    contract = open(curated).read()
    assert contract.startswith("#") and "drift_comparator" in contract
    run(USUAL, seed=1)
    with pytest.raises(G.DataValidationError, match="drift vs the previous run: feature 'category'") as error:
        run([0.1, 0.3, 0.6], seed=2)
    assert "'price'" not in str(error.value)
    # The rejected span never becomes the baseline: the same data run again stops again.
    with pytest.raises(G.DataValidationError, match="drift vs the previous run: feature 'category'"):
        run([0.1, 0.3, 0.6], seed=2)
    assert open(curated).read() == contract  # the curated copy is never overwritten
