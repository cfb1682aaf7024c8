"""Warm start from the latest blessed model: TFX's Trainer `base_model`, resolved like the Evaluator's baseline.

A daily run on a rolling window sees mostly the same items as yesterday's. Starting from the blessed model:
- EASE keeps the lambda yesterday's validation search chose (as a multiple of the mean interactions per item, so it
  follows the window's size) and recomputes its closed form: no search;
- iALS keeps alpha and the regularisation, and starts its ALS sweeps from yesterday's item factors, row by row
  through the item ids (an item known before keeps its learned row, a new item starts as iALS starts every row),
  so fewer sweeps are needed (TrainingConfig.ials_warm_iterations);
- both keep the fresh-interaction weight chosen on validation.
`auto` keeps the base model's family when it is still a candidate (the choice was made on validation before);
`recsys run --cold` trains from scratch and searches again. Embedding models trained by gradient descent (mf,
hybrid, two_tower, ...) train from scratch: row-mapped warm start of their tables is not built yet.

The base model is read through its checkpoint (`variables/`), by the attribute names the models give their
variables (the names below): no Python object of yesterday's code is needed.
"""

from __future__ import annotations

import dataclasses
import posixpath
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from components.training_config import TrainingConfig

FAMILY = "model_family"  # the exported model's variable naming its model (ease, ials, ...)
_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
# Variables a model exports for the next run's warm start, by the attribute names the models give them.
EASE_LAMBDA_SCALE = "ease_lambda_scale"
ALPHA, REGULARIZATION, ITEM_FACTORS, FRESH_WEIGHT = "alpha", "ials_regularization", "item_factors", "fresh_weight"
ITEM_IDS = "catalog_item_ids"
EASE, IALS = "ease", "ials"  # the models' registered names (components/models/__init__.py)
WARM_FAMILIES = (EASE, IALS)


@dataclasses.dataclass(frozen=True)
class BaseModel:
    """The latest blessed model's variables, as numpy, by attribute name."""

    path: str
    values: Dict[str, Any]

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
    return BaseModel(path, {name: reader.get_tensor(name + _SUFFIX) for name in wanted if name in names})


def candidates(names: Sequence[str], base: Optional[BaseModel]) -> Sequence[str]:
    """`auto`'s candidates narrowed to the base model's family when it is one of them."""
    if base is not None and base.family in names and base.family in WARM_FAMILIES:
        return (base.family,)
    return tuple(names)


def warm_config(config: TrainingConfig, family: str, base: Optional[BaseModel]) -> TrainingConfig:
    """The config with the base model's chosen hyperparameters where it is of the same family (a value the config
    fixes itself wins)."""
    if base is None or base.family != family or family not in WARM_FAMILIES:
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


def train_arguments(name: str, base: Optional[BaseModel], item_ids: Sequence[bytes],
                    config: TrainingConfig) -> Dict[str, Any]:
    """What model `name`'s train() takes beyond the config to start warm: iALS's initial item factors, or nothing."""
    if name != IALS:
        return {}
    initial = initial_item_factors(base, item_ids, config.ials_factors, config.seed)
    return {} if initial is None else {"initial_item_factors": initial}
