"""Typed Trainer configuration, carried through the Trainer's `custom_config` as a plain dict.

The pipeline builds it from the CLI; `run_fn` rebuilds it, so unknown keys fail loudly instead
of being silently ignored.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Tuple

CUSTOM_CONFIG_KEY = "training"


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    model: str = "mf"
    embedding_dim: int = 32
    hidden_units: Tuple[int, ...] = (64, 32)
    dropout: float = 0.1
    l2: float = 1e-5
    learning_rate: float = 0.005
    batch_size: int = 1024
    epochs: int = 10
    early_stopping_patience: int = 2
    seed: int = 7
    # A training split up to this size (TFRecord bytes) is read once and kept in memory; larger ones stream.
    in_memory_input_max_mb: float = 64.0

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
