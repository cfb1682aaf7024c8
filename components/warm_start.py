"""Warm start from the latest blessed model: TFX's Trainer `base_model`, resolved like the Evaluator's baseline.

A daily run on a rolling window sees mostly the same items as yesterday's. Starting from the blessed model:
- EASE keeps the lambda yesterday's validation search chose (as a multiple of the mean interactions per item, so it
  follows the window's size) and recomputes its closed form: no search;
- iALS keeps alpha and the regularisation, and starts its ALS sweeps from yesterday's item factors, row by row
  through the item ids (an item known before keeps its learned row, a new item starts as iALS starts every row),
  so fewer sweeps are needed (TrainingConfig.ials_warm_iterations);
- both keep the fresh-interaction weight chosen on validation.
- models trained by gradient descent (two_tower, mf, hybrid, mlp, content) start from yesterday's weights: each
  id table (base.id_table) row by row through the user and item ids, so a known id keeps its learned row and a
  new id starts from the table's initialiser; every other trainable weight of the same path and shape as is.
  They fit for at most TrainingConfig.warm_epochs (early stopping on validation still applies), and two_tower
  keeps its fresh-interaction weight.
`auto` keeps the base model's family when it is still a candidate (the choice was made on validation before);
`recsys run --cold` trains from scratch and searches again.

The base model is read through its checkpoint (`variables/`): by the attribute names the models give their
variables (the names below), and by attribute path for a Keras model's weights (the checkpoint's object graph);
no Python object of yesterday's code is needed.
"""

from __future__ import annotations

import dataclasses
import functools
import posixpath
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

from components import features as F
from components.training_config import TrainingConfig

FAMILY = "model_family"  # the exported model's variable naming its model (ease, ials, ...)
_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
# Variables a model exports for the next run's warm start, by the attribute names the models give them.
EASE_LAMBDA_SCALE = "ease_lambda_scale"
ALPHA, REGULARIZATION, ITEM_FACTORS, FRESH_WEIGHT = "alpha", "ials_regularization", "item_factors", "fresh_weight"
ITEM_IDS = "catalog_item_ids"
EASE, IALS = "ease", "ials"  # the models' registered names (components/models/__init__.py)
TWO_TOWER = "two_tower"
WARM_FAMILIES = (EASE, IALS, TWO_TOWER)  # ranking models whose base family `auto` keeps
_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
# Object-graph edges that list a Keras object's weights a second time (by position): paths through them are not
# attribute paths and are skipped.
_LISTINGS = frozenset({"keras_api", "variables", "trainable_variables", "non_trainable_variables", "weights",
                       "trainable_weights", "non_trainable_weights"})
_MAX_DEPTH = 6


@dataclasses.dataclass(frozen=True)
class BaseModel:
    """The latest blessed model's variables, as numpy, by attribute name."""

    path: str
    values: Dict[str, Any]
    user_ids: Tuple[bytes, ...] = ()  # the base model's user vocabulary (its assets), in index order

    @property
    def family(self) -> str:
        value = self.values.get(FAMILY)
        return value.decode("utf-8") if isinstance(value, bytes) else str(value or "")

    def get(self, name: str, default=None):
        return self.values.get(name, default)


def load(path: Optional[str]) -> Optional[BaseModel]:
    """The base model at `path` (TFX's fn_args.base_model), or None without one (a first run, `--cold`)."""
    if not path:
        return None
    reader = tf.train.load_checkpoint(posixpath.join(path, "variables", "variables"))
    names = {key[:-len(_SUFFIX)] for key in reader.get_variable_to_shape_map() if key.endswith(_SUFFIX)}
    wanted = (FAMILY, EASE_LAMBDA_SCALE, ALPHA, REGULARIZATION, ITEM_FACTORS, FRESH_WEIGHT, ITEM_IDS)
    vocabulary = posixpath.join(path, "assets", F.USER_VOCAB)
    user_ids = ()
    if tf.io.gfile.exists(vocabulary):
        with tf.io.gfile.GFile(vocabulary, "rb") as f:
            user_ids = tuple(line.rstrip(b"\n") for line in f)
    return BaseModel(path, {name: reader.get_tensor(name + _SUFFIX) for name in wanted if name in names}, user_ids)


def candidates(names: Sequence[str], base: Optional[BaseModel]) -> Sequence[str]:
    """`auto`'s candidates narrowed to the base model's family when it is one of them."""
    if base is not None and base.family in names and base.family in WARM_FAMILIES:
        return (base.family,)
    return tuple(names)


def warm_config(config: TrainingConfig, family: str, base: Optional[BaseModel]) -> TrainingConfig:
    """The config with the base model's chosen hyperparameters where it is of the same family (a value the config
    fixes itself wins; none with `keep_tuned` off: the search runs again)."""
    if base is None or base.family != family or family not in WARM_FAMILIES or not config.keep_tuned:
        return config
    changes = {}
    if not config.fresh_weight and base.get(FRESH_WEIGHT) is not None:
        changes["fresh_weight"] = float(base.get(FRESH_WEIGHT))
    if family == EASE and not config.ease_lambda and not config.ease_lambda_scale and base.get(EASE_LAMBDA_SCALE):
        changes["ease_lambda_scale"] = float(base.get(EASE_LAMBDA_SCALE))
    if family == IALS:
        if not config.ials_alpha and base.get(ALPHA) is not None:
            changes["ials_alpha"] = float(base.get(ALPHA))
        if not config.ials_regularization and base.get(REGULARIZATION) is not None:
            changes["ials_regularization"] = float(base.get(REGULARIZATION))
    return dataclasses.replace(config, **changes)


def mapped_rows(new_ids: Sequence[bytes], old_ids: Sequence[bytes], old_rows: np.ndarray,
                fresh_rows: np.ndarray) -> Tuple[np.ndarray, int]:
    """(rows, how many were known): the old row of every id known before, `fresh_rows`' row for a new one."""
    where = {item: n for n, item in enumerate(old_ids)}
    rows = np.array(fresh_rows, dtype=old_rows.dtype, copy=True)
    known = [(n, where[item]) for n, item in enumerate(new_ids) if item in where]
    if known:
        new, old = np.array(known).T
        rows[new] = old_rows[old]
    return rows, len(known)


def initial_item_factors(base: Optional[BaseModel], item_ids: Sequence[bytes], factors: int,
                         seed: int) -> Optional[np.ndarray]:
    """iALS's starting item factors from the base model ([items, factors]), or None (cold)."""
    if base is None or base.family != IALS or base.get(ITEM_FACTORS) is None or base.get(ITEM_IDS) is None:
        return None
    old = np.asarray(base.get(ITEM_FACTORS), np.float32)
    if old.shape[1] != factors:
        return None
    fresh = np.random.default_rng(seed).random((len(item_ids), factors), dtype=np.float32) * 0.01  # implicit's init
    rows, _ = mapped_rows(list(item_ids), list(base.get(ITEM_IDS)), old, fresh)
    return rows


def train_arguments(name: str, base: Optional[BaseModel], user_ids: Sequence[bytes], item_ids: Sequence[bytes],
                    config: TrainingConfig) -> Dict[str, Any]:
    """What ranking model `name`'s train() takes beyond the config to start warm: iALS's initial item factors,
    two_tower's `start_from` (warm_weights on the built model), or nothing."""
    if base is None or base.family != name:
        return {}
    if name == TWO_TOWER:
        return {"start_from": weights_starter(name, base, user_ids, item_ids)}
    if name != IALS:
        return {}
    initial = initial_item_factors(base, item_ids, config.ials_factors, config.seed)
    return {} if initial is None else {"initial_item_factors": initial}


def _attribute_paths(root, children) -> Iterator[Tuple[str, Any]]:
    """(path, node) for every node reachable from `root` by attribute names ("user_embedding/embeddings"), breadth
    first; `children(node)` -> {name: child}."""
    queue = [("", root)]
    while queue:
        path, node = queue.pop(0)
        yield path, node
        if path.count("/") >= _MAX_DEPTH:
            continue
        for name, child in children(node).items():
            if name not in _LISTINGS:
                queue.append((f"{path}/{name}" if path else name, child))


def _checkpoint_keys(reader) -> Dict[str, str]:
    """{attribute path: checkpoint key} of every variable the base model's checkpoint holds."""
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor(_GRAPH_KEY))
    keys = {}
    for path, node in _attribute_paths(0, lambda n: {c.local_name: c.node_id for c in graph.nodes[n].children}):
        for attribute in graph.nodes[node].attributes:
            if attribute.name == "VARIABLE_VALUE":
                keys.setdefault(path, attribute.checkpoint_key)
    return keys


def _model_variables(model: tf.Module) -> Dict[str, tf.Variable]:
    """{attribute path: variable} of `model`'s trainable variables (built layers only)."""
    view = tf.train.TrackableView(model)
    trainable = {v.ref() for v in model.trainable_variables}
    found, taken = {}, set()
    for path, node in _attribute_paths(model, view.children):
        if isinstance(node, tf.Variable) and node.ref() in trainable and node.ref() not in taken:
            found[path] = node
            taken.add(node.ref())
    return found


@functools.lru_cache(maxsize=2)
def _checkpoint(path: str):
    """(reader, {attribute path: checkpoint key}) of a base model, read once however many fits start from it (each
    rating form and the refit)."""
    reader = tf.train.load_checkpoint(posixpath.join(path, "variables", "variables"))
    return reader, _checkpoint_keys(reader)


def weights_starter(name: str, base: Optional[BaseModel], user_ids: Sequence[bytes],
                    item_ids: Sequence[bytes]) -> Optional[Callable[[tf.Module], None]]:
    """What a gradient-descent model's fit calls on its built model to start warm (warm_weights, saying what it
    carried over), or None when `base` is not of family `name`."""
    if base is None or base.family != name:
        return None

    def start(model: tf.Module) -> None:
        carried = warm_weights(model, base, user_ids, item_ids)
        print(f"{model.name}: warm start ({carried})" if carried else f"{model.name}: nothing to start from; cold",
              flush=True)

    return start


def warm_weights(model: tf.Module, base: Optional[BaseModel], user_ids: Sequence[bytes],
                 item_ids: Sequence[bytes]) -> Optional[str]:
    """Starts `model` (built) from `base` of the same family: id tables row by row through the ids (a new id keeps
    the row it was initialised with; the OOV rows too), other trainable weights of the same path and shape as
    they are. Returns what was carried over, in a line, or None when nothing was."""
    if base is None or base.family != getattr(model, "name", None):
        return None
    reader, keys = _checkpoint(base.path)
    tables = {layer.embeddings.ref(): layer.ids for layer in model.submodules
              if getattr(layer, "ids", None) and getattr(layer, "built", False)}
    ids = {F.USER_ID: (list(user_ids), list(base.user_ids)),
           F.ITEM_ID: (list(item_ids), [bytes(i) for i in base.get(ITEM_IDS, [])])}
    known, weights = {}, 0
    for path, variable in _model_variables(model).items():
        if path not in keys:
            continue
        old = reader.get_tensor(keys[path])
        current = variable.numpy()
        feature = tables.get(variable.ref())
        if feature is None:
            if old.shape == current.shape:
                variable.assign(old)
                weights += 1
            continue
        new_ids, old_ids = ids[feature]
        if not old_ids or old.shape[1:] != current.shape[1:] or old.shape[0] != len(old_ids) + F.OOV_BUCKETS \
                or current.shape[0] != len(new_ids) + F.OOV_BUCKETS:
            continue
        rows, count = mapped_rows(new_ids, old_ids, old[:len(old_ids)], current[:len(new_ids)])
        variable.assign(np.concatenate([rows, current[len(new_ids):]]))
        known[feature] = (count, len(new_ids))
    if not known and not weights:
        return None
    return ", ".join([f"{count} of {total} {feature}s known" for feature, (count, total) in sorted(known.items())]
                     + [f"{weights} other weight(s)"])
