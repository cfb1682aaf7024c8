"""models.config and the promotion log, without a pipeline: versions are tiny SavedModels."""

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from components import features as F
from serving import promotion
from tests.serving.tiny_model import save_version


@pytest.fixture
def root(tmp_path):
    for version in (1, 2, 3):
        save_version(str(tmp_path / F.DEFAULT_MODEL_NAME), version, float(version))
    return str(tmp_path)


def _config(root):
    with open(f"{root}/{promotion.CONFIG_FILE}") as f:
        return text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig()).model_config_list.config[0]


def test_promote_writes_specific_versions_and_labels(root):
    event = promotion.promote(root, F.DEFAULT_MODEL_NAME, 1, "stable", blessed=True, actor="ana", reason="first")
    assert (event.from_version, event.to_version, event.actor, event.forced) == (None, 1, "ana", False)
    promotion.promote(root, F.DEFAULT_MODEL_NAME, 2, "canary", blessed=True)
    model = _config(root)
    assert dict(model.version_labels) == {"stable": 1, "canary": 2}
    # Exactly the labelled versions: the unpromoted push 3 gets no traffic, labelled or not.
    assert list(model.model_version_policy.specific.versions) == [1, 2]
    assert model.base_path.endswith(f"/{F.DEFAULT_MODEL_NAME}")


def test_refusals_are_one_line_and_change_nothing(root):
    promotion.promote(root, F.DEFAULT_MODEL_NAME, 1, "stable", blessed=True)
    before = open(f"{root}/{promotion.CONFIG_FILE}").read()
    with pytest.raises(promotion.PromotionError, match="not blessed"):
        promotion.promote(root, F.DEFAULT_MODEL_NAME, 2, "stable", blessed=False)
    with pytest.raises(promotion.PromotionError, match="version 9 .* is not in"):
        promotion.promote(root, F.DEFAULT_MODEL_NAME, 9, "stable", blessed=True)
    with pytest.raises(promotion.PromotionError, match="label 'beta'"):
        promotion.promote(root, F.DEFAULT_MODEL_NAME, 2, "beta", blessed=True)
    with pytest.raises(promotion.PromotionError, match="no earlier version"):
        promotion.rollback(root, F.DEFAULT_MODEL_NAME, "stable")
    assert open(f"{root}/{promotion.CONFIG_FILE}").read() == before
    assert len(promotion.history(root)) == 1


def test_rollback_walks_back_through_the_history(root):
    for version in (1, 2, 3):
        promotion.promote(root, F.DEFAULT_MODEL_NAME, version, "stable", blessed=True)
    assert promotion.rollback(root, F.DEFAULT_MODEL_NAME).to_version == 2
    assert promotion.rollback(root, F.DEFAULT_MODEL_NAME).to_version == 1
    assert promotion.labels(root, F.DEFAULT_MODEL_NAME) == {"stable": 1}
    forced = promotion.promote(root, F.DEFAULT_MODEL_NAME, 3, "stable", blessed=False, force=True)
    assert forced.forced
    assert [e.action for e in promotion.history(root)] == ["promote"] * 3 + ["rollback"] * 2 + ["promote"]


def test_rollback_takes_every_label_and_all_traffic_off_the_rolled_back_version(root):
    promotion.promote(root, F.DEFAULT_MODEL_NAME, 2, "stable", blessed=True)
    promotion.promote(root, F.DEFAULT_MODEL_NAME, 3, "canary", blessed=True)
    promotion.promote(root, F.DEFAULT_MODEL_NAME, 3, "stable", blessed=True)
    event = promotion.rollback(root, F.DEFAULT_MODEL_NAME, "stable", reason="CTR dropped")
    assert (event.from_version, event.to_version, event.cleared) == (3, 2, ("canary",))
    model = _config(root)
    assert dict(model.version_labels) == {"stable": 2}
    assert list(model.model_version_policy.specific.versions) == [2]  # unlabelled requests get 2, nothing gets 3
    assert promotion.history(root)[-1].cleared == ["canary"]  # recorded
