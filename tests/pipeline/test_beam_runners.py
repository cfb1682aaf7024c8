"""`recsys compile --beam-runner`: the runner and its options reach every Beam-powered component's container in the
compiled spec; a runner that cannot start is one line naming the missing option; `recsys run` stays on this machine."""

import json
import shutil
import tempfile

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to
from tfx.components.statistics_gen import executor as statistics_gen_executor
from tfx.dsl.components.base import base_beam_executor, executor_spec

from components import contract as contract_lib
from components import features as F
from components.training_config import TrainingConfig
from pipeline import cli
from pipeline import config as C
from pipeline.pipeline import create_pipeline

IMAGE = "registry.example/recsys-pipeline:1.0"
DATA, OUT = "gs://bucket/data", "gs://bucket/run"
# TFX 1.16's components on a BeamExecutorSpec in this pipeline (a rating model, so the TFMA Evaluator runs too).
BEAM_COMPONENTS = {"RatingsExampleGen", "StatisticsGen", "Transform", "Evaluator"}

RUNNERS = {  # --beam-runner and --beam-arg, and the beam_pipeline_args every Beam-powered container must carry
    "direct default": ([], C.IN_MEMORY_BEAM_ARGS),
    "direct, user's args replace the defaults": (
        ["--beam-arg=--direct_num_workers=4"], ("--direct_num_workers=4",)),
    "dataflow, derived temp location and setup.py": (
        ["--beam-runner", "DataflowRunner", "--beam-arg=--project=acme", "--beam-arg=--region=europe-west4"],
        ("--runner=DataflowRunner", "--setup_file=/pipeline/setup.py", "--temp_location=gs://bucket/run/tmp",
         "--project=acme", "--region=europe-west4")),
    "dataflow, user's options override the derived ones": (
        ["--beam-runner", "DataflowRunner", "--beam-arg=--project=acme", "--beam-arg=--region=us-central1",
         "--beam-arg=--temp_location=gs://scratch/tmp", f"--beam-arg=--sdk_container_image={IMAGE}",
         "--beam-arg=--max_num_workers=20"],
        ("--runner=DataflowRunner", "--project=acme", "--region=us-central1", "--temp_location=gs://scratch/tmp",
         f"--sdk_container_image={IMAGE}", "--max_num_workers=20")),
    "flink": (
        ["--beam-runner", "FlinkRunner", "--beam-arg=--flink_master=flink-jobmanager:8081",
         "--beam-arg=--environment_type=EXTERNAL", "--beam-arg=--environment_config=localhost:50000"],
        ("--runner=FlinkRunner", "--flink_master=flink-jobmanager:8081", "--environment_type=EXTERNAL",
         "--environment_config=localhost:50000")),
    "spark, the runner named by --beam-arg alone": (
        ["--beam-arg=--runner=SparkRunner", "--beam-arg=--job_endpoint=spark-jobserver:8099"],
        ("--runner=SparkRunner", "--job_endpoint=spark-jobserver:8099")),
}


@pytest.fixture
def contract(tmp_path):
    path = tmp_path / "contract.json"
    path.write_text(contract_lib.DataContract(
        columns=contract_lib.Columns(rating=F.RATING, timestamp=F.TIMESTAMP)).to_json())
    return str(path)


def _compile(contract, out, *extra, output_dir=OUT, data_root=DATA):
    return cli.main(["compile", "--image", IMAGE, "--output", str(out), "--data-root", data_root, "--output-dir",
                     output_dir, "--contract", contract, "--schema", f"{DATA}/schema.pbtxt", "--model", "mf", *extra])


def _executor_args(job: dict) -> dict:
    """Each task's container args: KubeflowV2DagRunner appends beam_pipeline_args after the executor's own."""
    spec = job["pipelineSpec"]
    executors = spec["deploymentSpec"]["executors"]
    return {task: executors[spec["components"][t["componentRef"]["name"]]["executorLabel"]]["container"]["args"]
            for task, t in spec["root"]["dag"]["tasks"].items()
            if "container" in executors[spec["components"][t["componentRef"]["name"]]["executorLabel"]]}


def test_the_beam_components_are_the_ones_tfx_runs_on_beam(contract):
    config, _ = C.with_data_contract(C.PipelineConfig(data_root=DATA, output_dir=OUT, orchestrator=C.KUBEFLOW,
                                                      training=TrainingConfig(model="mf")), contract_path=contract,
                                     schema_path=f"{DATA}/schema.pbtxt")
    beam = {n.id for n in create_pipeline(config).components
            if isinstance(getattr(n, "executor_spec", None), executor_spec.BeamExecutorSpec)}
    assert beam == BEAM_COMPONENTS


@pytest.mark.parametrize("flags,expected", RUNNERS.values(), ids=RUNNERS.keys())
def test_every_beam_component_carries_the_runner_and_its_options(contract, tmp_path, capsys, flags, expected):
    out = tmp_path / "pipeline.json"
    assert _compile(contract, out, *flags) == 0
    assert "Beam " + " ".join(a.lstrip("-") for a in expected) in capsys.readouterr().out
    args = _executor_args(json.loads(out.read_text()))
    assert BEAM_COMPONENTS <= set(args)
    for task in BEAM_COMPONENTS:
        assert tuple(args[task][-len(expected):]) == expected, task
        assert not [a for a in args[task][:-len(expected)] if a.startswith("--runner")], task
    # ExampleGen's driver (its pre-cache check) resolves the input with the same options.
    lifecycle = json.loads(out.read_text())["pipelineSpec"]["deploymentSpec"]["executors"][
        "RatingsExampleGen_executor"]["container"]["lifecycle"]["preCacheCheck"]["args"]
    assert tuple(lifecycle[-len(expected):]) == expected


MISSING = {
    "dataflow without project or region": (
        ["--beam-runner", "DataflowRunner"], {},
        "DataflowRunner needs --beam-arg=--project=PROJECT, --beam-arg=--region=REGION"),
    "dataflow with a local output dir": (
        ["--beam-runner", "DataflowRunner", "--beam-arg=--project=acme", "--beam-arg=--region=europe-west4"],
        {"output_dir": "/mnt/run"},
        "DataflowRunner needs --beam-arg=--temp_location=gs://BUCKET/tmp (or a gs:// --output-dir)"),
    "dataflow with a temp location off gs://": (
        ["--beam-runner", "DataflowRunner", "--beam-arg=--project=acme", "--beam-arg=--region=europe-west4",
         "--beam-arg=--temp_location=/tmp/beam"], {},
        "DataflowRunner needs --temp_location on gs://, not '/tmp/beam': give "
        "--beam-arg=--temp_location=gs://BUCKET/tmp"),
    "dataflow reading a data root its workers cannot reach": (
        ["--beam-runner", "DataflowRunner", "--beam-arg=--project=acme", "--beam-arg=--region=europe-west4"],
        {"data_root": "s3://bucket/data"},
        "DataflowRunner workers cannot reach --data-root 's3://bucket/data': give a gs:// one"),
    "flink without a cluster": (
        ["--beam-runner", "FlinkRunner", "--beam-arg=--flink_master=[auto]"], {},
        "FlinkRunner needs the Flink cluster: give --beam-arg=--flink_master=HOST:8081 or "
        "--beam-arg=--job_endpoint=HOST:8099 (a Beam Flink job server)"),
    "spark on a local master": (
        ["--beam-runner", "SparkRunner", "--beam-arg=--spark_master_url=local[4]"], {},
        "SparkRunner needs the Spark cluster: give --beam-arg=--spark_master_url=spark://HOST:7077 or "
        "--beam-arg=--job_endpoint=HOST:8099 (a Beam Spark job server)"),
    "spark uber jar without its REST endpoint": (
        ["--beam-runner", "SparkRunner", "--beam-arg=--spark_master_url=spark://spark:7077",
         "--beam-arg=--spark_submit_uber_jar"], {},
        "--spark_submit_uber_jar needs --beam-arg=--spark_rest_url=http://HOST:6066"),
    "a conflicting --runner": (
        ["--beam-runner", "FlinkRunner", "--beam-arg=--runner=DataflowRunner", "--beam-arg=--job_endpoint=x:8099"],
        {}, "--beam-arg=--runner=DataflowRunner conflicts with --beam-runner FlinkRunner: name the runner once"),
    "an unknown runner": (
        ["--beam-arg=--runner=PortableRunner"], {},
        "unknown Beam runner 'PortableRunner'; choose one of: DirectRunner, DataflowRunner, FlinkRunner, SparkRunner"),
}


@pytest.mark.parametrize("flags,paths,message", MISSING.values(), ids=MISSING.keys())
def test_a_runner_that_cannot_start_is_one_line_naming_the_option(contract, tmp_path, capsys, flags, paths,
                                                                  message):
    out = tmp_path / "pipeline.json"
    assert _compile(contract, out, *flags, **paths) == cli.EXIT_ERROR
    captured = capsys.readouterr()
    assert captured.err == f"recsys compile: error: {message}\n"
    assert captured.out == "" and not out.exists()  # refused from the flags, before the contract is read


@pytest.mark.parametrize("flags,runner", [(["--beam-runner", "FlinkRunner"], "FlinkRunner"),
                                          (["--beam-arg=--runner=DataflowRunner"], "DataflowRunner")])
def test_recsys_run_refuses_cluster_runners(tmp_path, capsys, flags, runner):
    assert cli.main(["run", "--data-root", str(tmp_path), "--output-dir", str(tmp_path / "out"), *flags]) == \
        cli.EXIT_ERROR
    assert capsys.readouterr().err == (
        f"recsys run: error: recsys run runs Beam on this machine (DirectRunner); {runner} needs data and outputs its "
        f"workers reach: compile for the cluster with `recsys compile --beam-runner {runner}`\n")
    assert not (tmp_path / "out").exists()


def test_the_local_direct_runner_default_is_unchanged():
    multi = C.default_beam_args(C.MULTI_PROCESSING_MIN_BYTES, cpus=2)
    assert C.beam_settings(None, (), multi) == ("DirectRunner", ("--direct_running_mode=multi_processing",
                                                                 "--direct_num_workers=2"))
    assert C.beam_settings("DirectRunner", (), C.IN_MEMORY_BEAM_ARGS) == ("DirectRunner", C.IN_MEMORY_BEAM_ARGS)
    # --beam-arg replaces the whole default, as before runners were named; nothing is added for the DirectRunner.
    given = ("--runner=DirectRunner", "--direct_num_workers=3")
    assert C.beam_settings(None, given, multi) == ("DirectRunner", given)
    assert C.PipelineConfig(beam_args=given).beam_pipeline_args == given
    assert C.PipelineConfig().beam_pipeline_args == C.IN_MEMORY_BEAM_ARGS


MULTI_PROCESS = ("--direct_running_mode=multi_processing", "--direct_num_workers=2")


def _tfx_executor(args):
    """StatisticsGen's executor, as TFX starts every Beam-powered component with the pipeline's beam_pipeline_args."""
    return statistics_gen_executor.Executor(base_beam_executor.BaseBeamExecutor.Context(
        beam_pipeline_args=list(args)))


@pytest.mark.parametrize("args", [C.IN_MEMORY_BEAM_ARGS, MULTI_PROCESS], ids=["in memory", "multi-processing"])
def test_a_direct_runner_component_leaves_no_tfx_package_behind_and_runs(tmp_path, monkeypatch, args):
    """TFX's Beam executors build an sdist of TFX in the temp directory for every component they start unless the
    options name the workers' code (49 MB a component, never removed: a suite filled CI's disk)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    config = C.PipelineConfig(beam_args=args)
    # The reference: TFX handed the runner's options alone builds the package.
    assert [a for a in _tfx_executor(config.beam_pipeline_args)._beam_pipeline_args if a.startswith("--extra_package")]
    assert list(tmp_path.rglob("tfx_ephemeral-*"))
    for built in tmp_path.iterdir():
        shutil.rmtree(built)
    assert config.tfx_beam_pipeline_args == (C.DIRECT_RUNNER_CODE, *args)
    executor = _tfx_executor(config.tfx_beam_pipeline_args)
    assert not [a for a in executor._beam_pipeline_args if a.startswith("--extra_package")]
    with executor._make_beam_pipeline() as pipeline:
        assert_that(pipeline | beam.Create([1, 2, 3]) | beam.Map(lambda x: x * x), equal_to([1, 4, 9]))
    assert not list(tmp_path.rglob("*.tar.gz"))  # nothing built: neither TFX's sdist nor, where Beam stages, ours


def test_the_workers_code_is_named_once():
    """The user's own code option or another runner: TFX gets what applies, nothing twice."""
    shipped = ("--extra_package=/dist/recsys.tar.gz",)
    assert C.PipelineConfig(beam_args=shipped).tfx_beam_pipeline_args == shipped
    assert C.PipelineConfig(orchestrator=C.KUBEFLOW).tfx_beam_pipeline_args == (
        C.DIRECT_RUNNER_CODE, *C.IN_MEMORY_BEAM_ARGS)
    flink = C.PipelineConfig(beam_runner=C.FLINK, beam_args=("--flink_master=f:8081",))
    assert flink.tfx_beam_pipeline_args == flink.beam_pipeline_args


def test_a_hand_built_config_cannot_name_two_runners():
    config = C.PipelineConfig(beam_runner=C.FLINK, beam_args=("--runner=SparkRunner", "--job_endpoint=x:8099"))
    with pytest.raises(C.BeamOptionsError, match="name --runner=SparkRunner but the pipeline's runner is FlinkRunner"):
        config.beam_pipeline_args
