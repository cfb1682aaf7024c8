"""The committed schema/<kind>/ pairs are what a first run infers on the bundled samples: a change to the sample
generators (data/synthetic.py, data/shop.py) or to the committed copies fails here, so it shows up in review.

The samples are generated at their default size, as `make run` does: inferred string domains depend on it (a
smaller shop sample has no item with 100 interactions, and few enough brands for a brand domain)."""

import difflib
import json
import os
import re

import pytest
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from components import contract as contract_lib
from components import features as F
from pipeline import cli
from pipeline import config as C

KINDS = ("movies", "shop")  # `recsys sample --kind`, and the directory under schema/


def _committed(kind):
    contract_path, schema_path = C.schema_dir_files(os.path.join(C.REPO_ROOT, "schema", kind))
    with open(contract_path) as f:
        contract_text = f.read()
    with open(schema_path) as f:
        schema_text = f.read()
    return contract_text, schema_text


@pytest.fixture(scope="module", params=KINDS)
def sample(request, tmp_path_factory):
    """(kind, data root) of `recsys sample --kind KIND` with the defaults, once per module."""
    root = str(tmp_path_factory.mktemp(f"sample_{request.param}"))
    assert cli.main(["sample", "--kind", request.param, "--out", root]) == 0
    return request.param, root


def test_the_committed_contract_is_what_the_default_sample_infers(sample):
    kind, root = sample
    contract_text, _ = _committed(kind)
    assert contract_lib.infer(root).to_json() == contract_text, (
        f"schema/{kind}/contract.json no longer matches `recsys sample --kind {kind}`: see README "
        f"'The reviewed pair in the repository' to export the pair again")


def _curation(contract):
    """CuratedSchemaExport's parameters as the pipeline sets them for this contract (the pipeline is the one
    source of what a first run curates)."""
    from components import schema_curation
    from pipeline import pipeline

    config = C.PipelineConfig(data_root="/data", contract=contract, schema_export_path="/data/schema.pbtxt")
    export = next(c for c in pipeline.create_pipeline(config).components if c.id == "CuratedSchemaExport")
    props = export.exec_properties
    return dict(not_in_serving=json.loads(props["not_in_serving"]), drift_features=json.loads(props["drift_features"]),
                drift_threshold=props.get("drift_threshold", schema_curation.DEFAULT_DRIFT_THRESHOLD),
                value_ranges=json.loads(props["value_ranges"]))


@pytest.mark.parametrize("kind", KINDS)
def test_the_committed_schema_is_curated_and_names_no_machine(kind):
    from components import schema_curation

    contract_text, schema_text = _committed(kind)
    contract = contract_lib.DataContract.from_json(contract_text)
    schema = text_format.Parse(schema_text, schema_pb2.Schema())
    assert schema_text == schema_curation.reviewed_schema_text(schema)  # the stable header: no path, no date
    assert not re.search(r"/(tmp|home|work|Users)/|\d{4}-\d{2}-\d{2}", schema_text)
    assert schema_curation.curate(schema, **_curation(contract)) == schema  # curation complete: curating adds nothing
    features = {f.name: f for f in schema.feature}
    assert {name for name, f in features.items() if "SERVING" in f.not_in_environment} == (
        set(contract.not_in_serving) & set(features))
    assert {name for name, f in features.items() if f.HasField("drift_comparator")} == set(contract.drift_features)
    if contract.has_rating:
        domain = features[F.RATING].float_domain
        assert (domain.min, domain.max) == tuple(contract.rating_range)


def _schema_gen(root, contract):
    """What StatisticsGen and SchemaGen make of the sample: the tf.Examples of RatingsExampleGen's own transform,
    statistics by TFDV, the schema inferred by TFDV. SchemaGen reads every split (exclude_splits is empty), so the
    examples are not split here."""
    import apache_beam as beam
    import tensorflow_data_validation as tfdv
    from apache_beam.options.pipeline_options import PipelineOptions
    from google.protobuf import json_format

    from components import example_gen

    beam_options = PipelineOptions(list(C.IN_MEMORY_BEAM_ARGS))
    props = {"input_base": root, "custom_config": json_format.MessageToJson(
        example_gen.custom_config(contract, example_gen.SPLIT_HASH, 0.1, 0.1))}
    path = os.path.join(root, "examples.tfrecord")
    with beam.Pipeline(options=beam_options) as p:
        _ = (p
             | example_gen._JoinedRatingsToExample(props, contract.interactions_file)  # noqa: the executor's own
             | beam.Map(lambda example: example.SerializeToString())
             | beam.io.WriteToTFRecord(path, shard_name_template=""))
    statistics = tfdv.generate_statistics_from_tfrecord(  # beside its input: by default TFDV leaves a /tmp mkdtemp
        path, output_path=os.path.join(root, "statistics.tfrecord"), pipeline_options=beam_options)
    return tfdv.infer_schema(statistics, infer_feature_shape=True)  # SchemaGen's default


@pytest.mark.slow
def test_the_committed_schema_is_what_a_first_run_infers_and_curates(sample):
    from components import schema_curation

    kind, root = sample
    contract_text, schema_text = _committed(kind)
    contract = contract_lib.DataContract.from_json(contract_text)
    expected = text_format.Parse(schema_text, schema_pb2.Schema())
    inferred = schema_curation.curate(_schema_gen(root, contract), **_curation(contract))
    diff = "".join(difflib.unified_diff(text_format.MessageToString(expected).splitlines(True),
                                        text_format.MessageToString(inferred).splitlines(True),
                                        f"schema/{kind}/schema.pbtxt", "inferred from the sample"))
    assert inferred == expected, diff
