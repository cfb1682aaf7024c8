"""A server of our own: warm-up, message limits, TLS, draining on SIGTERM, and `recsys serve`'s config errors."""

import concurrent.futures
import datetime
import logging
import os
import signal
import subprocess
import sys
import time

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2, predict_pb2, prediction_log_pb2, prediction_service_pb2_grpc

from components import features as F
from components import warmup
from serving.client import RecsysClient, channel_credentials
from serving.options import read_ssl_config_file
from tests.serving.conftest import EXTERNAL, start_embedded
from tests.serving.tiny_model import WARMUP_SIGNATURES, save_version

pytestmark = pytest.mark.skipif(bool(EXTERNAL), reason="these need a server of their own")
AVAILABLE, END = get_model_status_pb2.ModelVersionStatus.AVAILABLE, get_model_status_pb2.ModelVersionStatus.END
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _predict(user="u", item="i"):
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = F.DEFAULT_MODEL_NAME, F.PREDICT
    request.inputs[F.USER_ID].CopyFrom(tf.make_tensor_proto([user] if isinstance(user, str) else user))
    request.inputs[F.ITEM_ID].CopyFrom(tf.make_tensor_proto([item] if isinstance(item, str) else item))
    return request


def test_warmup_requests_are_replayed_and_a_failing_one_keeps_the_old_version(tmp_path, caplog):
    base = str(tmp_path / F.DEFAULT_MODEL_NAME)
    save_version(base, 1, 0.0, warmup.requests(b"u", b"a", WARMUP_SIGNATURES))  # the Trainer's warm-up records
    caplog.set_level(logging.INFO)
    server, where = start_embedded(base)
    try:
        assert [r.message for r in caplog.records if "version 1 loaded and warmed up with 4 request(s)" in r.message]
        bad = prediction_log_pb2.PredictionLog()
        bad.predict_log.request.CopyFrom(_predict())
        bad.predict_log.request.model_spec.signature_name = "nope"
        save_version(base, 2, 10.0, [bad])
        deadline = time.monotonic() + 10
        while not [r for r in caplog.records if "version 2" in r.message and "warm-up" in r.message]:
            assert time.monotonic() < deadline, "version 2's failed warm-up was never logged"
            time.sleep(0.1)
        with RecsysClient(where.grpc, timeout=10) as client:
            assert client.predict("u", "i") == pytest.approx(2.0)  # still version 1
            statuses = client.status().model_version_status  # as TF Serving: the failed version is END
            assert [(s.version, s.state) for s in statuses] == [(1, AVAILABLE), (2, END)]
            assert statuses[1].status.error_code != 0 and "warm-up request 1" in statuses[1].status.error_message
    finally:
        server.stop(0)


def test_a_request_over_the_message_limit_is_resource_exhausted(tmp_path):
    base = str(tmp_path / F.DEFAULT_MODEL_NAME)
    save_version(base, 1, 0.0)
    server, where = start_embedded(base, max_message_bytes=4096)
    try:
        with grpc.insecure_channel(where.grpc) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with pytest.raises(grpc.RpcError) as raised:
                stub.Predict(_predict(["u" * 100] * 100, ["i"] * 100), timeout=10)
            assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert tf.make_ndarray(stub.Predict(_predict(), timeout=10).outputs[F.RATING_OUTPUT]).tolist() == [2.0]
    finally:
        server.stop(0)


def _certificate(subject, issuer_key, issuer=None, ca=False, key=None):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    return key, builder.sign(issuer_key or key, hashes.SHA256())


def _pem(key=None, cert=None):
    from cryptography.hazmat.primitives import serialization

    if cert is not None:
        return cert.public_bytes(serialization.Encoding.PEM).decode()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def test_tls_with_client_certificates_from_an_ssl_config_file(tmp_path):
    from cryptography.hazmat.primitives.asymmetric import ec

    ca_key = ec.generate_private_key(ec.SECP256R1())
    _, ca = _certificate("test-ca", ca_key, ca=True, key=ca_key)
    server_key, server_cert = _certificate("localhost", ca_key, ca.subject)
    client_key, client_cert = _certificate("client", ca_key, ca.subject)
    config = tmp_path / "ssl.config"
    config.write_text(f"server_key: {_pem(server_key)!r}\nserver_cert: {_pem(cert=server_cert)!r}\n"
                      f"custom_ca: {_pem(cert=ca)!r}\nclient_verify: true\n".replace("'", '"').replace("\\n", "\\n"))
    tls = read_ssl_config_file(str(config))
    assert tls.client_verify and tls.server_cert.startswith(b"-----BEGIN CERTIFICATE-----")
    base = str(tmp_path / F.DEFAULT_MODEL_NAME)
    save_version(base, 1, 0.0)
    server, where = start_embedded(base, tls=tls, rest_timeout=1.0)  # REST on: it must not be a way around TLS
    address = f"localhost:{where.grpc.rsplit(':', 1)[1]}"
    root = _pem(cert=ca).encode()
    try:
        _rest_requires_tls_and_a_client_certificate(tmp_path, server.rest_port, ca, client_key, client_cert)
        for name, content in (("ca.pem", _pem(cert=ca)), ("client.pem", _pem(cert=client_cert)),
                              ("client.key", _pem(client_key))):
            (tmp_path / name).write_text(content)
        credentials = channel_credentials(str(tmp_path / "ca.pem"), str(tmp_path / "client.pem"),
                                          str(tmp_path / "client.key"))
        with RecsysClient(address, timeout=10, credentials=credentials) as client:  # what --tls-* give the CLI
            assert client.predict("u", "i") == 2.0
        with_client_cert = grpc.ssl_channel_credentials(root, _pem(client_key).encode(), _pem(cert=client_cert).encode())
        with grpc.secure_channel(address, with_client_cert) as channel:
            answer = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(_predict(), timeout=10)
            assert tf.make_ndarray(answer.outputs[F.RATING_OUTPUT]).tolist() == [2.0]
        for channel in (grpc.secure_channel(address, grpc.ssl_channel_credentials(root)),  # no client cert
                        grpc.insecure_channel(address)):  # no TLS at all
            with channel, pytest.raises(grpc.RpcError) as raised:
                prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(_predict(), timeout=5)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(0)


def _rest_requires_tls_and_a_client_certificate(tmp_path, port, ca, client_key, client_cert):
    import socket
    import ssl
    import urllib.request

    url = f"https://localhost:{port}/v1/models/{F.DEFAULT_MODEL_NAME}"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:  # no TLS handshake ever: cut off
        started = time.monotonic()
        assert sock.recv(100) == b"" and time.monotonic() - started < 2.5
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:  # plaintext HTTP: no answer
        sock.sendall(b"GET /v1/models/recsys HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            assert not sock.recv(100).startswith(b"HTTP/")
        except ConnectionResetError:
            pass
    context = ssl.create_default_context(cadata=_pem(cert=ca))
    with pytest.raises((ssl.SSLError, OSError)):  # TLS without a client certificate: refused
        urllib.request.urlopen(url, timeout=5, context=context).read()
    (tmp_path / "rest-client.pem").write_text(_pem(cert=client_cert) + _pem(client_key))
    context.load_cert_chain(str(tmp_path / "rest-client.pem"))
    with urllib.request.urlopen(url, timeout=5, context=context) as response:
        assert response.status == 200


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rest_predict(port):
    import json
    import urllib.request

    body = json.dumps({"signature_name": F.PREDICT, "instances": [{F.USER_ID: "u", F.ITEM_ID: "i"}]}).encode()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/{F.DEFAULT_MODEL_NAME}:predict", body,
                                timeout=30) as response:
        return response.status, json.loads(response.read())


def test_sigterm_drains_the_request_in_flight_then_exits_cleanly(tmp_path):
    """A batch timeout of 3 s keeps requests in flight (gRPC and REST) while SIGTERM arrives: both are answered."""
    base = str(tmp_path / F.DEFAULT_MODEL_NAME)
    save_version(base, 1, 0.0)
    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 3000000 }\n")
    port, rest_port = _free_port(), _free_port()
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "serve", "--model-dir", base, "--host", "127.0.0.1",
         "--port", str(port), "--rest-port", str(rest_port), "--batching-parameters-file", str(batching)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with RecsysClient(f"127.0.0.1:{port}", timeout=30) as client:
            client.wait_until_ready(60)
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                in_flight = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict.future(
                    _predict(), timeout=30)
                rest = concurrent.futures.ThreadPoolExecutor(1).submit(_rest_predict, rest_port)
                time.sleep(0.5)
                process.send_signal(signal.SIGTERM)
                assert tf.make_ndarray(in_flight.result().outputs[F.RATING_OUTPUT]).tolist() == [2.0]
                assert rest.result(timeout=30) == (200, {"predictions": [2.0]})
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output
        assert "draining in-flight requests" in output and "stopped" in output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("flag, content, message", [
    ("--batching-parameters-file", "max_batch_size { value: x }", "batching.config: not a BatchingParameters"),
    ("--ssl-config-file", 'server_key: "k"', "ssl.config: an SSLConfig needs server_key and server_cert"),
    ("--monitoring-config-file", None, "monitoring.config: no such file"),
])
def test_serve_refuses_a_bad_config_file_in_one_line(tmp_path, flag, content, message):
    name = message.split(":")[0]
    if content is not None:
        (tmp_path / name).write_text(content)
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "serve", "--model-dir", str(tmp_path), flag,
                             str(tmp_path / name)], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, TF_USE_LEGACY_KERAS="1"))
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1 and last.startswith("recsys serve: error: ") and message in last, result.stderr

