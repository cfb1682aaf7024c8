"""Model registry: `--model NAME` picks a module here; each exposes `build(dims, config)`.

Every model takes the inputs of `components.catalog.model_inputs` (flat user/item indices, genre
multi-hot, scaled year), returns one rating per row, and has `score_all_items(users, items)`.
"""

from types import ModuleType

from components.models import content, hybrid, mf, mlp

MODELS = {"mf": mf, "mlp": mlp, "content": content, "hybrid": hybrid}


def get(name: str) -> ModuleType:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}") from None
