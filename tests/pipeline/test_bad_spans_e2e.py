"""Bad spans in the daily cycle (issue 19): a span that is incomplete, has a new column, repeats rows, has no rows or
has drifted never pushes; each is one line on stderr and a non-zero exit, and yesterday's model keeps serving
(the serving directory is unchanged and a live `recsys serve` answers from the same version throughout)."""

import os
import shutil

import pytest

from components import features as F
from components import spans
from data import timeline
from pipeline import cli, replay_benchmark
from serving.client import RecsysClient

TINY = timeline.TimelineSpec(days=3, initial_items=150, new_items_per_day=15, initial_users=250,
                             new_users_per_day=20, picks_per_visit=8.0)


def _missing_marker(span):
    (span / spans.SUCCESS_MARKER).unlink()


def _new_column(span):
    path = span / F.INTERACTIONS_FILE
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0] + ",session"] + [line + ",s1" for line in lines[1:]]) + "\n")


def _repeated_rows(span):
    path = span / F.INTERACTIONS_FILE
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines + lines[1:11]) + "\n")


def _no_rows(span):
    path = span / F.INTERACTIONS_FILE
    path.write_text(path.read_text().splitlines()[0] + "\n")


def _drifted(span):
    """Every rating the lowest: the label's distribution has moved far from the previous run's."""
    path = span / F.INTERACTIONS_FILE
    lines = path.read_text().splitlines()
    column = lines[0].split(",").index(F.RATING)

    def lowest(line):
        cells = line.split(",")
        cells[column] = "0.5"
        return ",".join(cells)

    path.write_text("\n".join([lines[0]] + [lowest(line) for line in lines[1:]]) + "\n")


BAD_SPANS = [
    (_missing_marker, "span-3: not complete (no _SUCCESS marker"),
    (_new_column, "unknown column 'session'"),
    (_repeated_rows, "10 of "),
    (_no_rows, "no interactions (an empty span)"),
    (_drifted, "drift vs the previous run"),
]


@pytest.mark.slow
def test_a_bad_span_never_pushes_and_yesterdays_model_keeps_serving(tmp_path, capsys):
    root, out = tmp_path / "timeline", tmp_path / "out"
    timeline.generate(str(root), TINY)
    # A day of this tiny timeline is thin data: the gate only has to bless here (as in test_spans_e2e).
    common = ["--data-root", str(root), "--output-dir", str(out), "--model", "ease", "--min-lift-over-popular", "-0.5"]
    assert cli.main(["run", *common, "--span", "2"]) == 0, capsys.readouterr().err
    serving = out / "serving" / F.DEFAULT_MODEL_NAME
    pushed = sorted(os.listdir(serving))
    assert len(pushed) == 1
    pristine = tmp_path / "span-3-as-delivered"
    shutil.copytree(root / "span-3", pristine)
    with replay_benchmark.running_server(str(serving)) as target:
        client = RecsysClient(target, timeout=10.0)
        served = client.wait_until_ready(60)
        user = next(iter(replay_benchmark.load_days(str(root), 2)[2].interactions))
        for corrupt, message in BAD_SPANS:
            shutil.rmtree(root / "span-3")
            shutil.copytree(pristine, root / "span-3")
            corrupt(root / "span-3")
            capsys.readouterr()
            code = cli.main(["run", *common, "--span", "3", "--window", "2"])
            err = capsys.readouterr().err.strip().splitlines()
            assert code == cli.EXIT_ERROR and len(err) == 1 and message in err[0], (corrupt.__name__, err)
            assert sorted(os.listdir(serving)) == pushed, corrupt.__name__  # nothing pushed
            assert client.wait_until_ready(10) == served  # yesterday's model still serves
            assert len(client.recommend(user, k=5)) == 5
        # The span as delivered is trained on and pushed: the refusals were the data, not the pipeline.
        shutil.rmtree(root / "span-3")
        shutil.copytree(pristine, root / "span-3")
        assert cli.main(["run", *common, "--span", "3", "--window", "2"]) == 0, capsys.readouterr().err
        assert len(os.listdir(serving)) == 2
