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


def credentials(args):
    from serving.client import channel_credentials

    return channel_credentials(args.tls_ca, args.tls_cert, args.tls_key)

