"""The production deployment files parse as what TensorFlow Serving and Kubernetes read, and serve the
models.config that `recsys promote` maintains (not a copy of their own)."""

import os
import re

import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from components import features as F
from serving import promotion
from tests.serving.tiny_model import save_version

DEPLOY = os.path.join(os.path.dirname(__file__), "..", "..", "serving", "deploy")


def _model_config(text):
    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


def _flag(args, name):
    (value,) = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    return value


def test_no_models_config_of_their_own():
    assert not os.path.exists(os.path.join(DEPLOY, "models.config"))


def test_compose_serves_the_config_recsys_promote_writes_with_paths_valid_in_the_container(tmp_path):
    with open(os.path.join(DEPLOY, "docker-compose.yml")) as f:
        service = yaml.safe_load(f)["services"]["tfserving"]
    root = str(tmp_path / "serving")  # what RECSYS_SERVING_DIR is set to: the output/serving directory

    def resolve(text):
        return re.sub(r"\$\{RECSYS_SERVING_DIR(:\?[^}]*)?\}", root, text)

    mounts = [resolve(v).rsplit(":", 1)[0].split(":") for v in service["volumes"]]
    assert [root, root] in mounts  # the serving dir, at the same path inside the container
    config_file = resolve(_flag(service["command"], "model_config_file"))
    assert config_file == f"{root}/{promotion.CONFIG_FILE}"
    save_version(f"{root}/{F.DEFAULT_MODEL_NAME}", 1, 0.0)
    promotion.promote(root, F.DEFAULT_MODEL_NAME, 1, "stable", blessed=True)
    with open(config_file) as f:  # what the container reads: its base_path is inside the mount
        (model,) = _model_config(f.read()).model_config_list.config
    assert model.name == F.DEFAULT_MODEL_NAME and model.base_path.startswith(root + "/")
    assert all(p.startswith("127.0.0.1:") for p in service["ports"])  # model management is on 8500
    for config in ("monitoring.config", "batching.config"):
        assert os.path.exists(os.path.join(DEPLOY, config))
        assert any(config in arg for arg in service["command"])


def test_kubernetes_reads_the_promoted_config_beside_the_versions():
    with open(os.path.join(DEPLOY, "k8s", "tfserving.yaml")) as f:
        docs = {d["kind"]: d for d in yaml.safe_load_all(f)}
    assert set(docs) == {"ConfigMap", "Deployment", "Service"}
    assert "models.config" not in docs["ConfigMap"]["data"]
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    config_file = _flag(container["args"], "model_config_file")
    assert config_file.startswith("gs://") and config_file.endswith(f"/serving/{promotion.CONFIG_FILE}")
    # Where `recsys promote --output-dir gs://BUCKET/recsys/output` writes it (base_path .../serving/recsys).
    assert config_file == "gs://YOUR_BUCKET/recsys/output/serving/" + promotion.CONFIG_FILE
    assert container["image"].startswith("tensorflow/serving:")
    assert container["readinessProbe"]["httpGet"]["path"] == f"/v1/models/{F.DEFAULT_MODEL_NAME}"
    assert {p["containerPort"] for p in container["ports"]} == {8500, 8501}
    assert docs["Service"]["spec"]["type"] == "ClusterIP"
