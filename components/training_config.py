"""Typed Trainer configuration, carried through the Trainer's `custom_config` as a plain dict.

The pipeline builds it from the CLI; `run_fn` rebuilds it, so unknown keys fail loudly instead
of being silently ignored.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Tuple

CUSTOM_CONFIG_KEY = "training"
# TrainingConfig.rating_history: SVD++'s implicit term in mf and hybrid (components/models/chosen_items.py).
RATING_HISTORY_ON, RATING_HISTORY_OFF, RATING_HISTORY_AUTO = "on", "off", "auto"
RATING_HISTORY_CHOICES = (RATING_HISTORY_AUTO, RATING_HISTORY_ON, RATING_HISTORY_OFF)


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    model: str = "auto"  # components.models.CHOICES; auto: the best ranking model that fits the catalogue
    embedding_dim: int = 32
    hidden_units: Tuple[int, ...] = (64, 32)
    dropout: float = 0.1
    # Ranking models (two_tower): L2 per looked-up row, against their summed softmax loss.
    l2: float = 1e-5
    # Rating models: L2 on the embedding rows (and biases) a batch looks up, per occurrence, against the
    # squared error: the lambda of SGD matrix factorisation (components/models/base.py RowL2Embedding).
    # Chosen on ML-100K-shaped samples (943 users, 1,650 items, 100K ratings): 0.05 still overfits
    # noisy ratings after ~5 epochs, 0.15 underfits. Dense kernels, shared by every example, get dense_l2.
    rating_l2: float = 0.08
    dense_l2: float = 1e-5
    # Rating models' Adam rate: at 0.005 mf's validation RMSE on noisy ratings turns up after epoch 5; 0.003
    # reaches the same best within the default epochs and stays flat.
    learning_rate: float = 0.003
    # mf and hybrid: "on" adds SVD++'s implicit term (the user is also the items they chose to rate), "off" is
    # the seeds' model exactly (dot product + user bias + item bias + global mean); "auto" lets the validation
    # split decide (the Tuner searches both forms; without it the Trainer fits both and keeps the better).
    # Training samples at most rating_history_sample items of a user's history per example.
    rating_history: str = RATING_HISTORY_AUTO
    rating_history_sample: int = 200
    # Rating models: once early stopping (and the Tuner) chose the epochs and settings on validation, fit a
    # fresh model with them on train + validation; the gate still judges on eval, which no fit saw.
    rating_refit: bool = True
    batch_size: int = 1024
    epochs: int = 10
    early_stopping_patience: int = 2
    warm_epochs: int = 3  # at most this many epochs from the latest blessed model's weights (warm start)
    # Warm start keeps the latest blessed model's tuned values (EASE's lambda, iALS's alpha and regularisation, the
    # fresh-interaction weight); False (`recsys run --tune` with a ranking model) searches them again on validation,
    # still starting from its weights and factors.
    keep_tuned: bool = True
    seed: int = 7
    # Ranking models (two_tower, ease). Two-tower: Adagrad at this rate, in-batch softmax logits divided by
    # the temperature. EASE: lambda (0: chosen on the validation split from a data-scaled grid) and the
    # catalogue size above which it refuses (its items x items matrix is dense).
    ranking_learning_rate: float = 0.05
    retrieval_temperature: float = 0.2
    ease_lambda: float = 0.0
    # lambda as a multiple of the mean interactions per item (what the search's grid is in): a warm start keeps the
    # one chosen before, so it follows the window's size (components/warm_start.py). 0: ease_lambda, or the search.
    ease_lambda_scale: float = 0.0
    ease_max_items: int = 10_000
    ease_refit: bool = True  # once lambda is chosen, refit on train + validation
    # Two-tower's user tower: the mean of the user's history item embeddings (+ projected attributes); with
    # two_tower_user_id a per-user id embedding is added (a user it never saw, or a session, has none).
    # While training, each example's history leaves its own item out and keeps at most
    # two_tower_history_sample items (a random subset: bounded cost per batch, a kind of dropout).
    two_tower_user_id: bool = False
    # Weight of a request's fresh interactions against the stored history (recommend_by_history); 0: chosen
    # on the validation split (components/models/freshness.py).
    fresh_weight: float = 0.0
    two_tower_history_sample: int = 100
    # iALS (components/models/ials.py): factors and ALS sweeps; alpha (an interaction's confidence) and the L2
    # regularisation are chosen on validation when 0; then the factors are refitted on train + validation. 128
    # factors: on the 100,000-item synthetic, tuned, 64 reached eval Recall@10 0.199, 128 0.208, 256 0.208.
    ials_factors: int = 128
    ials_iterations: int = 15
    ials_warm_iterations: int = 5  # sweeps from the latest blessed model's item factors (warm start)
    ials_alpha: float = 0.0
    ials_regularization: float = 0.0
    ials_refit: bool = True
    # Approximate top-k for `recommend` (components/ann.py): "none" (brute force, exact) or "scann" (an index the
    # Trainer builds over the item vectors of ials/two_tower). 0 below: ScaNN's defaults for the catalogue
    # (sqrt(items) leaves, a tenth searched, 3,000 candidates re-scored exactly).
    ann: str = "none"
    ann_leaves: int = 0
    ann_leaves_to_search: int = 0
    ann_reorder: int = 0
    # A training split up to this size (TFRecord bytes) is read once and kept in memory; larger ones stream.
    in_memory_input_max_mb: float = 64.0

    # Tuner (rating models by default, `--tune` for the full search): trials of the search, the epoch cap of each
    # trial, and the budget: no trial starts once this many seconds of search have passed (0: no budget;
    # `--tune` lifts it).
    tuner_trials: int = 8
    tuner_epochs: int = 10
    tuner_budget_s: float = 60.0

    def fit_epochs(self, warm: bool) -> int:
        """Epochs a gradient-descent fit may run: at most warm_epochs from the latest blessed model's weights."""
        return min(self.epochs, self.warm_epochs) if warm else self.epochs

    def with_hyperparameters(self, values: Mapping[str, Any]) -> "TrainingConfig":
        """A copy with the tuned fields overridden (the Tuner's best values, or its whole config dict)."""
        values = dict(values or {})
        if "values" in values and "space" in values:  # keras_tuner.HyperParameters.get_config()
            values = dict(values["values"])
        fields = {f.name: f for f in dataclasses.fields(self)}
        unknown = set(values) - set(fields)
        if unknown:
            raise ValueError(f"unknown hyperparameter(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **{name: type(getattr(self, name))(value) for name, value in values.items()})

    def to_custom_config(self) -> Dict[str, Any]:
        return {CUSTOM_CONFIG_KEY: dataclasses.asdict(self)}

    @classmethod
    def from_custom_config(cls, custom_config: Optional[Mapping[str, Any]]) -> "TrainingConfig":
        values = dict((custom_config or {}).get(CUSTOM_CONFIG_KEY, {}))
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        if "hidden_units" in values:  # JSON turns the tuple into a list
            values["hidden_units"] = tuple(values["hidden_units"])
        return cls(**values)
