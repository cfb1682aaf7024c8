"""`recsys run --span` on the timeline sample (issue 19): TFX reads the span through its range configuration with
the span's own catalogue, ML Metadata records it, `recsys runs show` names it; a span already blessed is not run
again, an older one and an incomplete one are refused; `--window` trains on the last spans accepted so far; items
first seen in the new span are recommended after its run, an item its catalogue dropped never is."""

import collections
import csv
import glob
import json
import os

import pytest
import tensorflow as tf

from components import features as F
from components import spans
from data import timeline
from pipeline import cli

TINY = timeline.TimelineSpec(days=3, initial_items=150, new_items_per_day=15, initial_users=250,
                             new_users_per_day=20, picks_per_visit=8.0)


def _transform_input_spans(output_dir):
    """The spans of the Examples the newest Transform execution read (ML Metadata)."""
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    from pipeline import metadata
    from pipeline.config import PipelineConfig

    store = metadata_store.MetadataStore(metadata.connection_config(PipelineConfig(output_dir=str(output_dir))))
    (transform_type,) = [t for t in store.get_execution_types() if t.name.endswith("Transform")]
    newest = max(store.get_executions_by_type(transform_type.name), key=lambda x: x.id)
    inputs = [e.artifact_id for e in store.get_events_by_execution_ids([newest.id])
              if e.type == metadata_store_pb2.Event.INPUT and e.path.steps[0].key == "examples"]
    return sorted(a.custom_properties["span"].int_value for a in store.get_artifacts_by_id(inputs))


@pytest.mark.slow
def test_spans_are_read_recorded_refused_and_windowed(tmp_path, capsys):
    root, out = tmp_path / "timeline", tmp_path / "out"
    timeline.generate(str(root), TINY)
    assert not (root / "items.csv").exists()  # each span has its own catalogue: ExampleGen must read that one
    # One day of a timeline is thin data (most popular of the day is hard to beat): the gate here only has to bless,
    # so it asks for half of most popular's recall; what the gate measures is test_ranking_e2e's business.
    common = ["--data-root", str(root), "--output-dir", str(out), "--model", "ease", "--min-lift-over-popular", "-0.5"]
    assert cli.main(["run", *common]) == cli.EXIT_ERROR  # spans need --span
    assert "--span latest" in capsys.readouterr().err
    code = cli.main(["run", *common, "--span", "2"])
    printed = capsys.readouterr()
    assert code == 0, printed.err  # blessed and pushed
    assert f"span 2: {spans.span_dir(str(root), 2)}" in printed.out
    assert (root / "contract.json").exists()  # inferred from span 2's files, kept at the root for review
    assert '"active": "active"' in (root / "contract.json").read_text()  # the timeline's flag, read as one
    assert cli.main(["runs", "show", "--output-dir", str(out)]) == 0
    assert "(data: span 2)" in capsys.readouterr().out  # ExampleGen's span, from ML Metadata
    assert _transform_input_spans(out) == [2]

    # ML Metadata knows span 2 is blessed: running it again does nothing, an older span is refused, in one line.
    assert cli.main(["run", *common, "--span", "2"]) == 0
    assert "span 2 was already trained and blessed" in capsys.readouterr().out
    assert cli.main(["run", *common, "--span", "1"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "span 1 is older than span 2, already trained and blessed" in err[0]

    marker = root / "span-3" / spans.SUCCESS_MARKER
    marker.unlink()  # span 3 being delivered
    assert cli.main(["run", *common, "--span", "latest"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "span-3: not complete (no _SUCCESS marker" in err[0]
    marker.write_text("")  # delivered

    # Span 3's catalogue marks inactive the best item span 2's model offers a stranger (delisted today): the window's
    # vocabulary still holds it, the next model must never recommend it.
    (first,) = glob.glob(str(out / "serving" / "*" / "*"))
    picks = _picks(root, 2)
    retired = _stranger(tf.saved_model.load(first))[0].decode()
    items_file = root / "span-3" / F.ITEMS_FILE
    catalogue = items_file.read_text().splitlines(keepends=True)
    items_file.write_text("".join(line.replace(",true", ",false") if line.startswith(retired + ",") else line
                                  for line in catalogue))
    released_on_3 = {line.split(",")[0] for line in catalogue[1:]} - {
        line.split(",")[0] for line in (root / "span-2" / F.ITEMS_FILE).read_text().splitlines()[1:]}

    # A window of 3 ending at span 3: span 1 was never accepted by a run here, so the window is spans 2 and 3.
    assert cli.main(["run", *common, "--span", "latest", "--window", "3"]) == 0
    printed = capsys.readouterr().out
    assert "training on the last 3 spans accepted so far" in printed
    # Two complete spans before 3 in the window: users are held out whole (user-hash), and the gate scores them from
    # span 2, the window's earlier span.
    assert "split user-hash, auto: held-out users judged from 2 earlier span(s) of the window" in printed, printed
    newest_gate = max(glob.glob(str(out / "**" / "ranking_metrics.json"), recursive=True), key=os.path.getmtime)
    with open(newest_gate) as f:
        gate = json.load(f)
    assert gate["history_spans"] == 1 and gate["baseline_comparison"]["confidence"] == 0.95, gate
    # Warm from span 2's blessed EASE: its lambda kept, one closed form instead of the search's four.
    assert "warm start: ease from " in printed and "ease_lambda_scale" in printed, printed
    assert len([line for line in printed.splitlines() if line.startswith("ease: lambda")]) == 1
    assert _transform_input_spans(out) == [2, 3]
    # The window's spans were not written again by Transform: the Trainer transformed them as it read them.
    assert len(os.listdir(out / "pipeline_root" / "Transform" / "transformed_examples")) == 1
    assert cli.main(["runs", "show", "--output-dir", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "(data: span 3; trained on spans 2, 3)" in shown
    (reported,) = [line for line in shown.splitlines() if line.startswith("report: ")]
    (html,) = [path for path in reported[len("report: "):].split(", ") if path.endswith(".html")]
    assert "trained on spans 2, 3" in open(html).read()  # the HTML report says the same

    (pushed,) = set(glob.glob(str(out / "serving" / "*" / "*"))) - {first}
    model = tf.saved_model.load(pushed)
    users = sorted({u for u in _users(root, 2) | _users(root, 3)})[:1000]
    listed = model.signatures[F.RECOMMEND](user_id=tf.constant(users), k=tf.constant(20),
                                           exclude_rated=tf.constant(True))[F.ITEMS_OUTPUT].numpy()
    recommended = {i.decode() for row in listed for i in row if i}
    assert retired not in recommended
    assert recommended & released_on_3, "items first seen in span 3 are recommended once span 3 is trained on"
    # Every other way to ask leaves it out too: popularity for a stranger, "more like this", the filtered lists.
    stranger = _stranger(model)
    assert retired.encode() not in stranger and stranger[0]
    similar = model.signatures[F.SIMILAR_ITEMS](item_id=tf.constant(sorted(picks)[:50]),
                                                k=tf.constant(20))[F.ITEMS_OUTPUT].numpy()
    assert retired.encode() not in similar
    allowed = model.signatures[F.RECOMMEND_FILTERED](
        user_id=tf.constant(users[:5]), k=tf.constant(5), exclude_rated=tf.constant(False),
        exclude_item_ids=tf.constant([], tf.string), allow_item_ids=tf.constant([retired]))[F.ITEMS_OUTPUT].numpy()
    assert not allowed.any()  # allowed by the request, retired by the catalogue: no candidate at all


def _stranger(model):
    """An unknown user's top 20: the most popular items the model may recommend."""
    return model.signatures[F.RECOMMEND](user_id=tf.constant(["nobody"]), k=tf.constant(20),
                                         exclude_rated=tf.constant(False))[F.ITEMS_OUTPUT].numpy()[0]


def _picks(root, span):
    with open(root / f"span-{span}" / F.INTERACTIONS_FILE, newline="") as f:
        return collections.Counter(row[F.ITEM_ID] for row in csv.DictReader(f))


def _users(root, span):
    with open(root / f"span-{span}" / F.INTERACTIONS_FILE, newline="") as f:
        return {row[F.USER_ID] for row in csv.DictReader(f)}
