"""Versions of one model under a TF Serving base path: discovered, loaded, swapped, as TF Serving does.

A version is an integer directory holding `saved_model.pb` (the TFX Pusher and tf.saved_model.save
write that file last, so a directory without it is a push in progress and is not looked at). New
versions are loaded fully before they replace the old one, so a request in flight never sees a
half-loaded model. A version that fails to load is logged once and skipped: the policy picks among
the versions that load (the newest loadable one by default), and the failed one is retried only when
its saved_model.pb changes (a copy that was still being written when we read it).

Everything goes through tf.io.gfile, so a gs:// base path works like a local one. The default poll
interval is 5 s: a new push is live within seconds while an idle server lists the bucket only 12
times a minute (TF Serving's --file_system_poll_wait_seconds defaults to 1 s).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import posixpath
import threading
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.config import model_server_config_pb2

from components import ann

log = logging.getLogger(__name__)

SAVED_MODEL_FILE = "saved_model.pb"
DEFAULT_POLL_INTERVAL_S = 5.0


class VersionNotFound(LookupError):
    """No loaded version matches the request."""


class LabelError(ValueError):
    """A label points at a version that is not available (TF Serving refuses such a config too)."""


State = get_model_status_pb2.ModelVersionStatus.State


@dataclasses.dataclass(frozen=True)
class VersionState:
    """What GetModelStatus reports for a version: LOADING, AVAILABLE, or END with the load error."""

    version: int
    state: int  # ModelVersionStatus.State
    error: str = ""


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
    """TF Serving's model_version_policy: the newest `num_versions`, every version, or specific ones."""

    kind: str = "latest"  # latest | all | specific
    num_versions: int = 1
    versions: Sequence[int] = ()

    def select(self, available: Sequence[int]) -> List[int]:
        if self.kind == "all":
            return list(available)
        if self.kind == "specific":
            return [v for v in available if v in set(self.versions)]
        return list(available)[-self.num_versions:]


@dataclasses.dataclass(frozen=True)
class LoadedVersion:
    version: int
    path: str
    functions: Dict[str, Callable]
    signature_defs: Dict[str, meta_graph_pb2.SignatureDef]
    _model: object = dataclasses.field(repr=False, compare=False)  # keeps the functions' variables alive


def list_versions(base_path: str) -> List[int]:
    """Integer version directories that hold a saved_model.pb, oldest first."""
    if not tf.io.gfile.isdir(base_path):
        return []
    versions = []
    for entry in tf.io.gfile.listdir(base_path):
        name = entry.rstrip("/")
        if name.isdigit() and tf.io.gfile.exists(f"{base_path.rstrip('/')}/{name}/{SAVED_MODEL_FILE}"):
            versions.append(int(name))
    return sorted(versions)


def _stamp(base_path: str, version: int) -> Tuple[int, int]:
    """Size and mtime of a version's saved_model.pb: a change means the version is worth another try."""
    try:
        stat = tf.io.gfile.stat(f"{base_path.rstrip('/')}/{version}/{SAVED_MODEL_FILE}")
    except tf.errors.OpError:
        return (-1, -1)
    return (stat.length, stat.mtime_nsec)


def load_version(base_path: str, version: int) -> LoadedVersion:
    """Reads the signature defs from saved_model.pb itself (what GetModelMetadata returns) and loads."""
    path = f"{base_path.rstrip('/')}/{version}"
    with tf.io.gfile.GFile(f"{path}/{SAVED_MODEL_FILE}", "rb") as f:
        saved_model = saved_model_pb2.SavedModel.FromString(f.read())
    ann.register_ops()  # a model with a ScaNN index needs its ops
    model = tf.saved_model.load(path)
    signature_defs = dict(saved_model.meta_graphs[0].signature_def)
    signature_defs.pop("__saved_model_init_op", None)
    functions = {name: model.signatures[name] for name in model.signatures}
    return LoadedVersion(version, path, functions, signature_defs, model)


class ModelStore:
    """Serves the versions of one model its policy selects, with labels, and follows new pushes by polling."""

    def __init__(self, name: str, base_path: str, poll_interval: float = DEFAULT_POLL_INTERVAL_S,
                 policy: VersionPolicy = VersionPolicy(), labels: Optional[Mapping[str, int]] = None,
                 warmup: Optional[Callable[[LoadedVersion], int]] = None):
        self.name, self.base_path, self.poll_interval = name, base_path, poll_interval
        self.warmup = warmup  # runs on a loaded version before it serves; raising fails the load
        self.policy, self.labels = policy, dict(labels or {})
        self._loaded: Dict[int, LoadedVersion] = {}
        self._failed: Dict[int, Tuple[int, int]] = {}  # version -> _stamp when it failed
        self._errors: Dict[int, str] = {}  # version -> why its last load failed (GetModelStatus: END)
        self._loading: Optional[int] = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._refreshing = threading.Lock()

    def configure(self, policy: VersionPolicy, labels: Mapping[str, int]) -> None:
        """Applies a new policy and labels; loads what they need before anything is unloaded.

        A label on a version that is not loaded afterwards is refused and the old config stays.
        """
        commit, _ = self.prepare(policy, labels)
        commit()

    def prepare(self, policy: VersionPolicy, labels: Mapping[str, int]) -> Tuple[Callable[[], None],
                                                                                 Callable[[], None]]:
        """Loads what a new policy and labels need, changing nothing that serves; returns (commit, abort).

        Exactly one of them must be called: commit applies the config and unloads what it no longer
        wants; abort unloads what the preparation loaded. Polling waits in between (one lock), so a
        multi-model reload is applied whole or not at all. Raises LabelError, having undone itself.
        """
        self._refreshing.acquire()
        before = set(self.versions())
        try:
            wanted = policy.select(self._candidates())
            missing = {label: v for label, v in labels.items() if v not in wanted}
            if not missing:
                self._load_wanted(policy)
                missing = {label: v for label, v in labels.items() if v not in self._loaded}
            if missing:
                label, version = sorted(missing.items())[0]
                raise LabelError(f"Request to assign label {label} to version {version} of model {self.name}, "
                                 f"which is not currently available (available: "
                                 f"{', '.join(map(str, policy.select(self._candidates()))) or 'none'})")
        except BaseException:
            self._unload_except(before)
            self._refreshing.release()
            raise

        def commit() -> None:
            try:
                with self._lock:
                    self.policy, self.labels = policy, dict(labels)
                self._refresh_locked()
            finally:
                self._refreshing.release()

        def abort() -> None:
            try:
                self._unload_except(before)
            finally:
                self._refreshing.release()

        return commit, abort

    def _unload_except(self, keep: set) -> None:
        with self._lock:
            for version in [v for v in self._loaded if v not in keep]:
                del self._loaded[version]

    def refresh(self) -> None:
        with self._refreshing:
            self._refresh_locked()

    def _candidates(self) -> List[int]:
        """Versions on disk minus those that failed to load and have not changed since."""
        return [v for v in list_versions(self.base_path)
                if v not in self._failed or self._failed[v] != _stamp(self.base_path, v)]

    def _load_wanted(self, policy: VersionPolicy) -> List[int]:
        """Loads the versions `policy` wants, choosing again without any that fail; returns the choice."""
        tried: set = set()
        while True:
            wanted = policy.select([v for v in self._candidates() if v in self._loaded or v not in tried])
            todo = [v for v in wanted if v not in self._loaded]
            tried.update(todo)
            if all([self._load(v) for v in todo]):
                return wanted  # else choose again without the failed ones: each is tried once per refresh

    def _refresh_locked(self) -> None:
        """Loads the versions the policy wants, skipping any that fail; then unloads those no longer wanted."""
        wanted = self._load_wanted(self.policy)
        if not any(v in self._loaded for v in wanted):
            return  # nothing the policy wants could be loaded: keep serving what we have
        labelled = set(self.labels.values())  # a labelled version keeps serving until relabelled
        with self._lock:
            for version in [v for v in self._loaded if v not in wanted and v not in labelled]:
                del self._loaded[version]
                log.info("model %s: version %d unloaded", self.name, version)

    def _load(self, version: int) -> bool:
        stamp = _stamp(self.base_path, version)
        with self._lock:
            self._loading = version
        try:
            loaded = load_version(self.base_path, version)
            warmed = self.warmup(loaded) if self.warmup else 0
        except Exception as e:  # a corrupt version must not take the server down
            self._failed[version] = stamp
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            log.error("model %s: version %d at %s failed to load, skipped until its %s changes: %s",
                      self.name, version, self.base_path, SAVED_MODEL_FILE, first_line)
            with self._lock:
                self._loading, self._errors[version] = None, first_line
            return False
        self._failed.pop(version, None)
        with self._lock:
            self._loading = None
            self._errors.pop(version, None)
            self._loaded[version] = loaded
        log.info("model %s: version %d loaded%s", self.name, version,
                 f" and warmed up with {warmed} request(s)" if warmed else "")
        return True

    def start(self) -> None:
        self.refresh()
        self._thread = threading.Thread(target=self._poll, name=f"poll-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops polling and drops the loaded versions (requests in flight keep theirs until they finish)."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=self.poll_interval + 1)
        with self._lock:
            self._loaded.clear()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.refresh()
            except Exception:  # keep polling whatever the filesystem does
                log.exception("model %s: scanning %s failed", self.name, self.base_path)

    def versions(self) -> List[int]:
        with self._lock:
            return sorted(self._loaded)

    def states(self) -> List[VersionState]:
        """Every version with a state, oldest first: AVAILABLE, LOADING, or END with its load error."""
        with self._lock:
            states = {v: VersionState(v, State.AVAILABLE) for v in self._loaded}
            states.update({v: VersionState(v, State.END, error) for v, error in self._errors.items()
                           if v not in states and v in self._failed})
            if self._loading is not None and self._loading not in self._loaded:
                states[self._loading] = VersionState(self._loading, State.LOADING)
        return [states[v] for v in sorted(states)]

    def loaded(self) -> List[LoadedVersion]:
        with self._lock:
            return list(self._loaded.values())

    def get(self, version: Optional[int] = None, label: Optional[str] = None) -> LoadedVersion:
        with self._lock:
            if label:
                if label not in self.labels:
                    raise VersionNotFound(f"Unrecognized servable version label: {label}")
                version = self.labels[label]
            if not self._loaded:
                raise VersionNotFound(f"Servable not found for request: Latest({self.name})")
            if version is None:
                return self._loaded[max(self._loaded)]
            if version not in self._loaded:
                raise VersionNotFound(f"Servable not found for request: Specific({self.name}, {version})")
            return self._loaded[version]


class ModelNotFound(VersionNotFound):
    """No model of that name is served."""


class ConfigError(ValueError):
    """A ModelServerConfig refused before anything is loaded (empty, duplicate names, base_path outside roots)."""


def single_model_config(name: str, base_path: str) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add(name=name, base_path=base_path, model_platform="tensorflow")
    model.model_version_policy.latest.num_versions = 1
    return config


def policy_of(model: model_server_config_pb2.ModelConfig) -> VersionPolicy:
    policy = model.model_version_policy
    kind = policy.WhichOneof("policy_choice") or "latest"
    if kind == "specific":
        return VersionPolicy("specific", versions=tuple(policy.specific.versions))
    if kind == "all":
        return VersionPolicy("all")
    return VersionPolicy("latest", num_versions=policy.latest.num_versions or 1)


class Models:
    """The model stores by name, as the current ModelServerConfig says; resolves a ModelSpec to a version."""

    def __init__(self, poll_interval: float, warmup: Optional[Callable[[LoadedVersion], int]] = None):
        self.poll_interval, self.warmup = poll_interval, warmup
        self.stores: Dict[str, ModelStore] = {}
        self._lock = threading.Lock()

    def apply(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Applies a whole config or none of it: every model is loaded before anything is dropped.

        If any model's versions or labels cannot be served, what was loaded for the new config is
        unloaded again and the previous config keeps serving unchanged (LabelError propagates).
        """
        names = [model.name for model in config.model_config_list.config]
        if not names:
            raise ConfigError("the config lists no model: an empty config would unload every model, refused")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates or "" in names:
            raise ConfigError(f"model names must be unique and non-empty: {', '.join(duplicates) or '(empty)'}")
        with self._lock:
            plans = []  # (store, new, commit, abort)
            try:
                for model in config.model_config_list.config:
                    store = self.stores.get(model.name)
                    new = store is None or store.base_path != model.base_path
                    if new:
                        store = ModelStore(model.name, model.base_path, self.poll_interval, warmup=self.warmup)
                    commit, abort = store.prepare(policy_of(model), dict(model.version_labels))
                    plans.append((store, new, commit, abort))
            except BaseException:
                for store, new, _, abort in reversed(plans):
                    abort()
                    if new:
                        store.stop()
                raise
            stores = {}
            for store, new, commit, _ in plans:
                commit()
                if new:
                    store.start()
                stores[store.name] = store
            removed = [s for name, s in self.stores.items() if stores.get(name) is not s]
            self.stores = stores
        for store in removed:
            store.stop()

    def stop(self) -> None:
        for store in self.stores.values():
            store.stop()

    def store(self, name: str) -> ModelStore:
        store = self.stores.get(name)
        if store is None:
            raise ModelNotFound(f"Servable not found for request: Latest({name})")
        return store

    def resolve(self, spec) -> LoadedVersion:
        """The version a ModelSpec asks for (number, label, or the newest); raises VersionNotFound."""
        return self.store(spec.name).get(spec.version.value if spec.HasField("version") else None,
                                         label=spec.version_label or None)

    def serves(self, function) -> bool:
        """Whether a signature function belongs to a version still loaded (batch queues of others go)."""
        return any(function in loaded.functions.values() for store in self.stores.values()
                   for loaded in store.loaded())

    def base_paths(self) -> List[str]:
        return [store.base_path for store in self.stores.values()]


def normalized_path(path: str) -> str:
    """`path` without `.`/`..` segments or symlinks (local), so a prefix test means containment."""
    if "://" in path:
        scheme, rest = path.split("://", 1)
        return f"{scheme}://{posixpath.normpath('/' + rest).lstrip('/')}"
    return os.path.realpath(path)


def under_roots(path: str, roots: Sequence[str]) -> bool:
    """Whether `path` is one of `roots` or lies below one of them."""
    target = normalized_path(path)
    for root in roots:
        root = normalized_path(root).rstrip("/")
        if target == root or target.startswith(root + "/"):
            return True
    return False
