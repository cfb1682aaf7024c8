"""`recsys run --span` on the timeline sample (issue 19): TFX reads the span through its range configuration with
the span's own catalogue, ML Metadata records it, `recsys runs show` names it; a span already blessed is not run
again, an older one and an incomplete one are refused; `--window` trains on the last spans accepted so far."""

import pytest

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

    # A window of 3 ending at span 3: span 1 was never accepted by a run here, so the window is spans 2 and 3.
    assert cli.main(["run", *common, "--span", "latest", "--window", "3"]) == 0
    assert "training on the last 3 spans accepted so far" in capsys.readouterr().out
    assert _transform_input_spans(out) == [2, 3]
    assert cli.main(["runs", "show", "--output-dir", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "(data: span 3; trained on spans 2, 3)" in shown
    (reported,) = [line for line in shown.splitlines() if line.startswith("report: ")]
    (html,) = [path for path in reported[len("report: "):].split(", ") if path.endswith(".html")]
    assert "trained on spans 2, 3" in open(html).read()  # the HTML report says the same
