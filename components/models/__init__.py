"""Model registry: `--model NAME` picks a module here; each exposes `build(...)` and `FEATURE_KEYS`."""

from types import ModuleType

from components.models import mf, mlp

MODELS = {"mf": mf, "mlp": mlp}


def get(name: str) -> ModuleType:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}") from None
