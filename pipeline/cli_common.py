"""What every `recsys` sub-command module shares: the one-line error, exit statuses, argument checks."""

from __future__ import annotations

from typing import List

EXIT_ERROR = 1
EXIT_NOT_BLESSED = 3


class CliError(Exception):
    """An expected failure: printed as one line, exit status 1."""


def check_models(names: List[str]) -> None:
    from components import models

    try:
        for name in names:
            models.is_ranking(name)  # raises on an unknown name; `auto` is valid
    except ValueError as e:
        raise CliError(str(e)) from None


def check_ann(model: str, choice: str, installed_here: bool = True) -> None:
    """`--ann scann` needs a model scored by user x item vectors, and (to train locally) the scann package."""
    from components import ann, models

    if choice == ann.NONE:
        return
    vector_models = ("ials", "two_tower")
    if model != models.AUTO and model not in vector_models:
        raise CliError(f"--ann {choice} indexes item vectors: --model {model} has none (use "
                       f"{', '.join(vector_models)} or auto)")
    if installed_here and not ann.available():
        raise CliError(f"--ann {choice} needs the scann package, which is not importable here (requirements.lock "
                       f"pins scann==1.3.2: `make venv`)")


def credentials(args):
    from serving.client import channel_credentials

    return channel_credentials(args.tls_ca, args.tls_cert, args.tls_key)

