"""Beam's multi-processing DirectRunner (2 workers) computes the same vocabularies as one process."""

import dataclasses
import os

import pytest
import tensorflow_transform as tft
from tfx import v1 as tfx
from tfx.orchestration import pipeline as tfx_pipeline

from components import features as F
from pipeline.config import PipelineConfig, with_data_contract
from pipeline.pipeline import create_pipeline

pytestmark = pytest.mark.slow

MULTI_PROCESS = ("--direct_running_mode=multi_processing", "--direct_num_workers=2")


def _transform_output(config: PipelineConfig) -> tft.TFTransformOutput:
    root = os.path.join(config.pipeline_root, "Transform", "transform_graph")
    (execution,) = os.listdir(root)
    return tft.TFTransformOutput(os.path.join(root, execution))


def _run_until_transform(config: PipelineConfig) -> tft.TFTransformOutput:
    # A partial run: everything upstream of Transform, no training.
    config, _ = with_data_contract(config)
    tfx.orchestration.LocalDagRunner().run(create_pipeline(config),
                                           run_options=tfx_pipeline.RunOptions(to_nodes=["Transform"]))
    assert not os.path.exists(os.path.join(config.pipeline_root, "Trainer"))
    return _transform_output(config)


def test_vocabularies_match_between_one_and_two_worker_processes(tiny_data, tmp_path):
    single = PipelineConfig(data_root=tiny_data, output_dir=str(tmp_path / "single"))
    multi = dataclasses.replace(single, output_dir=str(tmp_path / "multi"), beam_args=MULTI_PROCESS)
    single_out, multi_out = _run_until_transform(single), _run_until_transform(multi)
    for vocab in (F.USER_VOCAB, F.ITEM_VOCAB, F.vocab_name("genres")):  # the movie sample's genres
        expected = single_out.vocabulary_by_name(vocab)
        assert len(expected) > 10
        assert multi_out.vocabulary_by_name(vocab) == expected, vocab
