"""Promotion and rollback of served versions: TF Serving's models.config, applied live, with an audit log.

The config (version policy `specific` + `version_labels`) is written atomically beside the model
directories and pushed to a running server through ModelService.HandleReloadConfigRequest, which real
TF Serving implements too. Every change is appended to `promotions.jsonl` (time, actor, label, from, to,
reason, forced), the record `recsys models history` prints and `recsys rollback` reads.

The config serves exactly the labelled versions: an unlabelled request gets the highest of them (TF
Serving's rule), so a push nobody promoted never receives traffic, and a rolled-back version loses
every label (a canary on it too) and so all of its traffic.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import time
from typing import Dict, List, Optional, Tuple

import grpc
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from components.atomic_io import atomic_write
from serving.model_store import list_versions

CONFIG_FILE = "models.config"
HISTORY_FILE = "promotions.jsonl"
LABELS = ("canary", "stable")


class PromotionError(ValueError):
    """A refused promotion or rollback, in one line."""


@dataclasses.dataclass(frozen=True)
class Event:
    time: float
    actor: str
    label: str
    from_version: Optional[int]
    to_version: int
    reason: str
    action: str  # promote | rollback
    forced: bool = False
    cleared: Tuple[str, ...] = ()  # other labels a rollback removed from the rolled-back version


def _config_path(serving_root: str) -> str:
    return f"{serving_root.rstrip('/')}/{CONFIG_FILE}"


def _history_path(serving_root: str) -> str:
    return f"{serving_root.rstrip('/')}/{HISTORY_FILE}"


def load_config(serving_root: str, model_name: str) -> model_server_config_pb2.ModelServerConfig:
    """The current config, or the implicit one (newest version, no labels) when none was written yet."""
    path = _config_path(serving_root)
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
            return text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add(
        name=model_name, base_path=f"{serving_root.rstrip('/')}/{model_name}", model_platform="tensorflow")
    model.model_version_policy.latest.num_versions = 1
    return config


def _model(config: model_server_config_pb2.ModelServerConfig, model_name: str):
    for model in config.model_config_list.config:
        if model.name == model_name:
            return model
    raise PromotionError(f"model {model_name!r} is not in {CONFIG_FILE}")


def labels(serving_root: str, model_name: str) -> Dict[str, int]:
    return dict(_model(load_config(serving_root, model_name), model_name).version_labels)


def history(serving_root: str) -> List[Event]:
    path = _history_path(serving_root)
    if not tf.io.gfile.exists(path):
        return []
    with tf.io.gfile.GFile(path) as f:
        return [Event(**json.loads(line)) for line in f if line.strip()]


def _write_config(serving_root: str, config: model_server_config_pb2.ModelServerConfig) -> None:
    atomic_write(_config_path(serving_root), text_format.MessageToString(config))


def _append_history(serving_root: str, event: Event) -> None:
    """Append-only: the previous lines are copied, never rewritten, and the whole file replaced at once."""
    path = _history_path(serving_root)
    previous = tf.io.gfile.GFile(path).read() if tf.io.gfile.exists(path) else ""
    atomic_write(path, previous + json.dumps(dataclasses.asdict(event), sort_keys=True) + "\n")


def _set_label(serving_root: str, model_name: str, label: str, version: int, *, actor: Optional[str],
               reason: str, action: str, forced: bool = False, clear_others: bool = False) -> Event:
    if label not in LABELS:
        raise PromotionError(f"label {label!r}: use one of {', '.join(LABELS)}")
    config = load_config(serving_root, model_name)
    model = _model(config, model_name)
    available = list_versions(model.base_path)
    if version not in available:
        raise PromotionError(f"version {version} of {model_name} is not in {model.base_path} "
                             f"(available: {', '.join(map(str, available)) or 'none'})")
    current = dict(model.version_labels)
    previous = current.get(label)
    cleared: Tuple[str, ...] = ()
    if clear_others and previous is not None:  # the version rolled back from keeps no label at all
        cleared = tuple(sorted(other for other, v in current.items() if v == previous and other != label))
        for other in cleared:
            del current[other]
    event = Event(time.time(), actor or getpass.getuser(), label, previous, version, reason, action, forced, cleared)
    current[label] = version
    model.version_labels.clear()
    model.version_labels.update(current)
    # Exactly the labelled versions: unlabelled requests get the highest of them, never an unpromoted push.
    model.model_version_policy.specific.versions[:] = sorted(set(current.values()))
    _write_config(serving_root, config)
    _append_history(serving_root, event)
    return event


def promote(serving_root: str, model_name: str, version: int, label: str, *, blessed: bool, force: bool = False,
            actor: Optional[str] = None, reason: str = "") -> Event:
    if not blessed and not force:
        raise PromotionError(f"version {version} was not blessed by the Evaluator; use --force to promote it anyway "
                             "(recorded)")
    return _set_label(serving_root, model_name, label, version, actor=actor, reason=reason, action="promote",
                      forced=not blessed)


def rollback(serving_root: str, model_name: str, label: str = "stable", *, actor: Optional[str] = None,
             reason: str = "") -> Event:
    """Points `label` back at the version it had before the promotion that gave it its current one."""
    current = labels(serving_root, model_name).get(label)
    for event in reversed(history(serving_root)):
        if (event.action == "promote" and event.label == label and event.to_version == current
                and event.from_version is not None):
            return _set_label(serving_root, model_name, label, event.from_version, actor=actor,
                              reason=reason or f"rollback from {current}", action="rollback", clear_others=True)
    raise PromotionError(f"label {label!r} has no earlier version to roll back to")


def apply(target: str, serving_root: str, model_name: str, timeout: float = 30.0,
          credentials: Optional[grpc.ChannelCredentials] = None) -> None:
    """Sends the written config to a running server (ours: its admin port; TF Serving: its gRPC port)."""
    request = model_management_pb2.ReloadConfigRequest(config=load_config(serving_root, model_name))
    channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    with channel:
        try:
            model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(request, timeout=timeout)
        except grpc.RpcError as e:
            raise PromotionError(f"{target} refused the new config: {e.code().name}: {e.details()}") from None
