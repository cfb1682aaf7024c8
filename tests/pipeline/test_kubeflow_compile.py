"""The Kubeflow V2 compile: a spec kfp's own proto accepts, with our image and runtime parameters."""

import json

from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from components import models
from components import contract as contract_lib
from components import features as F
from pipeline import cli

IMAGE = "registry.example/recsys-pipeline:1.0"


def test_compiled_spec_parses_names_every_component_and_declares_runtime_parameters(tmp_path, capsys):
    out = tmp_path / "spec" / "pipeline.json"
    # The reviewed contract and the curated schema the team committed; the data itself is on shared storage.
    contract = tmp_path / "contract.json"
    contract.write_text(contract_lib.DataContract(columns=contract_lib.Columns(timestamp=F.TIMESTAMP)).to_json())
    schema = "gs://bucket/data/schema.pbtxt"
    code = cli.main(["compile", "--image", IMAGE, "--output", str(out), "--data-root", "gs://bucket/data",
                     "--output-dir", "gs://bucket/run", "--train-steps", "500", "--contract", str(contract),
                     "--schema", schema])
    assert code == 0 and str(out) in capsys.readouterr().out
    job = json.loads(out.read_text())
    spec = json_format.ParseDict(job["pipelineSpec"], pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    tasks = set(spec.root.dag.tasks)
    assert {"RatingsExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator", "Transform", "Trainer",
            "RankingGate", "Pusher"} <= tasks  # the default model ranks: no TFMA Evaluator
    assert any(t.startswith("latest_blessed_model_resolver") for t in tasks)
    executors = job["pipelineSpec"]["deploymentSpec"]["executors"]
    images = {e["container"]["image"] for e in executors.values() if "container" in e}
    assert images == {IMAGE}
    assert set(spec.root.input_definitions.parameters) == {"data-root", "training-config", "train-args",
                                                           "push-destination"}
    defaults = {k: v["stringValue"] for k, v in job["runtimeConfig"]["parameters"].items()}
    assert defaults["data-root"] == "gs://bucket/data"
    assert json.loads(defaults["train-args"])["numSteps"] == 500
    assert json.loads(defaults["push-destination"])["filesystem"]["baseDirectory"] == "gs://bucket/run/serving/recsys"
    assert json.loads(defaults["training-config"])["training"]["model"] == models.DEFAULT_MODEL
    assert schema in out.read_text()
    assert json.loads(json.loads(defaults["training-config"])["contract"])["columns"]["timestamp"] == F.TIMESTAMP
    assert not list(out.parent.glob(".*.tmp"))


def test_bigquery_input_compiles_with_bigquery_example_gen(tmp_path, capsys):
    out = tmp_path / "bq.json"
    contract = tmp_path / "contract.json"
    contract.write_text(contract_lib.DataContract(columns=contract_lib.Columns(timestamp=F.TIMESTAMP)).to_json())
    query = "SELECT user_id, item_id, timestamp FROM `project.shop.interactions`"
    assert cli.main(["compile", "--image", IMAGE, "--output", str(out), "--data-root", "gs://bucket/data",
                     "--output-dir", "gs://bucket/run", "--contract", str(contract),
                     "--schema", "gs://bucket/data/schema.pbtxt", "--bigquery-query", query]) == 0
    job = json.loads(out.read_text())
    spec = json_format.ParseDict(job["pipelineSpec"], pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    assert "BigQueryExampleGen" in spec.root.dag.tasks and "RatingsExampleGen" not in spec.root.dag.tasks
    assert query in out.read_text()
    assert "data-root" not in spec.root.input_definitions.parameters
    capsys.readouterr()
    assert cli.main(["compile", "--image", IMAGE, "--output", str(out), "--data-root", "gs://bucket/data",
                     "--output-dir", "gs://bucket/run", "--bigquery-query", query]) == cli.EXIT_ERROR
    assert "--bigquery-query needs --contract" in capsys.readouterr().err


def test_a_rating_model_compiles_with_its_budgeted_tuner_and_the_fit_flags_reach_the_trainer(tmp_path, capsys):
    contract = tmp_path / "contract.json"
    contract.write_text(contract_lib.DataContract(columns=contract_lib.Columns(rating=F.RATING, timestamp=F.TIMESTAMP),
                                                  rating_range=(0.5, 5.0)).to_json())
    common = ["compile", "--image", IMAGE, "--data-root", "gs://bucket/data", "--output-dir", "gs://bucket/run",
              "--contract", str(contract), "--schema", "gs://bucket/data/schema.pbtxt", "--model", "mf"]

    def compiled(name, *flags):
        out = tmp_path / name
        assert cli.main([*common, "--output", str(out), *flags]) == 0, capsys.readouterr().err
        job = json.loads(out.read_text())
        training = json.loads(job["runtimeConfig"]["parameters"]["training-config"]["stringValue"])["training"]
        return set(job["pipelineSpec"]["root"]["dag"]["tasks"]), training

    tasks, training = compiled("default.json")
    assert "Tuner" in tasks and {"Evaluator", "Trainer"} <= tasks
    assert (training["rating_history"], training["rating_refit"], training["tuner_budget_s"]) == ("auto", True, 60.0)
    tasks, training = compiled("seeds.json", "--no-tune", "--rating-history", "off", "--no-refit")
    assert "Tuner" not in tasks
    assert (training["rating_history"], training["rating_refit"], training["ease_refit"]) == ("off", False, False)
    tasks, training = compiled("full.json", "--tune")
    assert "Tuner" in tasks and training["tuner_budget_s"] == 0.0  # --tune: every trial, no time budget
    # A ranking model: no Tuner component; --tune re-runs its own search over a warm start (keep_tuned off).
    tasks, training = compiled("ease.json", "--tune", "--model", "ease")
    assert "Tuner" not in tasks and training["model"] == "ease" and training["keep_tuned"] is False


def test_a_span_root_compiles_for_the_newest_span_at_each_run_or_one_span_and_a_window_is_refused(tmp_path, capsys):
    """Kubeflow (issue 19): `--span latest` leaves the span to ExampleGen's driver when each run starts (no
    RangeConfig), and the Trainer's catalogue of record follows it; `--span N` names one; a window cannot compile."""
    from data import timeline

    root = tmp_path / "timeline"
    timeline.generate(str(root), timeline.TimelineSpec(days=2, initial_items=40, new_items_per_day=5,
                                                       initial_users=30, new_users_per_day=5, picks_per_visit=3.0))
    common = ["compile", "--image", IMAGE, "--data-root", str(root), "--output-dir", "gs://bucket/run"]

    def example_gen_and_catalogue(name, *flags):
        out = tmp_path / name
        assert cli.main([*common, "--output", str(out), *flags]) == 0, capsys.readouterr().err
        printed = capsys.readouterr().out
        job = json.loads(out.read_text())
        task = json.dumps(job["pipelineSpec"]["components"]["RatingsExampleGen"]) + json.dumps(
            job["pipelineSpec"]["root"]["dag"]["tasks"]["RatingsExampleGen"])
        catalogue = json.loads(job["runtimeConfig"]["parameters"]["training-config"]["stringValue"])["catalogue"]
        return printed, task, catalogue

    printed, task, catalogue = example_gen_and_catalogue("latest.json", "--span", "latest")
    assert "each run reads the newest span" in printed
    assert "span-{SPAN}/interactions.csv" in task and "staticRange" not in task and "static_range" not in task
    assert catalogue["pattern"] == "span-{SPAN}/interactions.csv" and catalogue["items_file"] == F.ITEMS_FILE
    printed, task, catalogue = example_gen_and_catalogue("one.json", "--span", "1")
    assert "; span 1)" in printed and "span-{SPAN}/interactions.csv" in task
    assert "startSpanNumber" in task.replace("start_span_number", "startSpanNumber")
    assert catalogue["pattern"] == "span-1/interactions.csv"
    assert cli.main([*common, "--output", str(tmp_path / "w.json"), "--span", "latest", "--window", "3"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--window 3: a window of spans runs on the local runner only" in err[0]
    assert cli.main([*common, "--output", str(tmp_path / "x.json")]) == cli.EXIT_ERROR
    assert "--span latest" in capsys.readouterr().err  # a span root needs --span, as `recsys run` does
