"""The production deployment files parse as what TensorFlow Serving and Kubernetes read."""

import os

import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from components import features as F

DEPLOY = os.path.join(os.path.dirname(__file__), "..", "..", "serving", "deploy")


def _model_config(text):
    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


def test_models_config_serves_the_pushed_model_name():
    with open(os.path.join(DEPLOY, "models.config")) as f:
        config = _model_config(f.read())
    (model,) = config.model_config_list.config
    assert model.name == F.DEFAULT_MODEL_NAME and model.base_path == f"/models/{F.DEFAULT_MODEL_NAME}"


def test_kubernetes_manifests_are_consistent():
    with open(os.path.join(DEPLOY, "k8s", "tfserving.yaml")) as f:
        docs = {d["kind"]: d for d in yaml.safe_load_all(f)}
    assert set(docs) == {"ConfigMap", "Deployment", "Service"}
    (model,) = _model_config(docs["ConfigMap"]["data"]["models.config"]).model_config_list.config
    assert model.name == F.DEFAULT_MODEL_NAME
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("tensorflow/serving:")
    assert container["readinessProbe"]["httpGet"]["path"] == f"/v1/models/{F.DEFAULT_MODEL_NAME}"
    assert {p["containerPort"] for p in container["ports"]} == {8500, 8501}


def test_compose_mounts_the_serving_dir_and_the_configs():
    with open(os.path.join(DEPLOY, "docker-compose.yml")) as f:
        service = yaml.safe_load(f)["services"]["tfserving"]
    assert any(v.startswith("../../output/serving:") for v in service["volumes"])
    for config in ("models.config", "monitoring.config", "batching.config"):
        assert os.path.exists(os.path.join(DEPLOY, config))
        assert any(config in arg for arg in service["command"])
