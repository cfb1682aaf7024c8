"""Where the serving conformance tests send requests: our embedded server, or any running server.

By default each module gets an embedded server (gRPC and REST on free loopback ports) over a
temporary model directory holding tiny_model version 1. To run the same tests against a real
TensorFlow Serving:

    python -m tests.serving.tiny_model /tmp/models/recsys        # writes versions 1 and 2
    rm -r /tmp/models/recsys/2                                   # the tests expect version 1 first
    docker run -p 8500:8500 -p 8501:8501 -v /tmp/models:/models -e MODEL_NAME=recsys \
        -v $PWD/serving/deploy/monitoring.config:/config/monitoring.config \
        tensorflow/serving:2.16.1 --monitoring_config_file=/config/monitoring.config \
        --file_system_poll_wait_seconds=1
    SERVING_TARGET=localhost:8500 SERVING_REST=localhost:8501 SERVING_MODEL_DIR=/tmp/models/recsys \
        pytest tests/serving

SERVING_MODEL_DIR (the directory that server watches) lets the version-swap tests write new
versions; without it they are skipped. Tests that need a server of their own (labels, batching,
TLS, limits) always use the embedded one.
"""

import dataclasses
import os
from typing import Optional

import pytest

from components import features as F
from tests.serving.tiny_model import save_version

EXTERNAL = os.environ.get("SERVING_TARGET")


@dataclasses.dataclass
class Target:
    grpc: str  # host:port
    rest: Optional[str]  # http://host:port, or None when the server has no REST port
    model_dir: Optional[str]  # where new versions can be written, or None
    embedded: object = None  # the ModelServer when we started it


def start_embedded(base_path: str, **options):
    """An embedded server on loopback with REST on; returns (ModelServer, Target)."""
    from serving.options import ServerOptions
    from serving.server import build_server

    settings = dict(host="127.0.0.1", port=0, rest_port=0, poll_interval=0.2)
    settings.update(options)
    server, port, _ = build_server(F.DEFAULT_MODEL_NAME, base_path, options=ServerOptions(**settings))
    rest = f"http://127.0.0.1:{server.rest_port}" if server.rest_port else None
    return server, Target(f"127.0.0.1:{port}", rest, base_path, server)


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    if EXTERNAL:
        rest = os.environ.get("SERVING_REST")
        yield Target(EXTERNAL, f"http://{rest}" if rest else None, os.environ.get("SERVING_MODEL_DIR"))
        return
    base = str(tmp_path_factory.mktemp("models") / F.DEFAULT_MODEL_NAME)
    save_version(base, 1, 0.0)
    server, where = start_embedded(base)
    yield where
    server.stop(0)


embedded_only = pytest.mark.skipif(bool(EXTERNAL), reason="needs a server of its own (SERVING_TARGET is set)")
