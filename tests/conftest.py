"""Shared fixtures: tiny generated datasets and one real pipeline run shared by the slow tests."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from data import synthetic  # noqa: E402

TINY = synthetic.SampleSpec(num_users=300, num_items=200, num_ratings=6000, seed=3)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> str:
    """A 6K-rating dataset in the canonical layout, generated once per session."""
    root = str(tmp_path_factory.mktemp("tiny_data"))
    synthetic.generate(root, TINY)
    return root


@pytest.fixture(scope="session")
def pipeline_run(tiny_data, tmp_path_factory):
    """One end-to-end LocalDagRunner run on the tiny data; returns its config."""
    from components.training_config import TrainingConfig
    from pipeline import local_runner
    from pipeline.config import EvaluationConfig, PipelineConfig

    config = PipelineConfig(
        data_root=tiny_data,
        output_dir=str(tmp_path_factory.mktemp("pipeline_output")),
        training=TrainingConfig(model="mf", epochs=8, batch_size=256, learning_rate=0.01),
        evaluation=EvaluationConfig(rmse_upper_bound=0.9),
        tune=False,  # a served model for the serving tests; the default search is test_pipeline_e2e's (hybrid)
    )
    local_runner.run(config)
    return config


def pytest_collection_modifyitems(items):
    """Files with the most end-to-end (slow) tests first, each file's tests in their order.

    `make test` hands whole files to two workers in collection order (`--dist loadfile --no-loadscope-reorder`):
    with the longest files first, the last files to run are short ones and neither worker waits long for the
    other. xdist's own reordering (most tests first) queued the one-test, three-minute pipeline files last.
    """
    order = {}
    for index, item in enumerate(items):
        first, slow = order.get(item.path, (index, 0))
        order[item.path] = (first, slow + (item.get_closest_marker("slow") is not None))
    items.sort(key=lambda item: (-order[item.path][1], order[item.path][0]))
