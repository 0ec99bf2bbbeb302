"""What every workload's ``main`` does: JSON logs, configuration from the environment, then run.

A configuration error is logged and exits with status 2 before anything starts.
"""

import asyncio
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

from payplane.platform.logs import configure_json_logging

EXIT_BAD_CONFIG: Final = 2
Config = TypeVar("Config")


class ConfigError(ValueError):
    """The environment does not configure the workload; the message names the variable."""


def serve_from_env(
    config_from_env: Callable[[dict[str, str]], Config],
    run: Callable[[Config], Coroutine[Any, Any, int]],
    log: logging.Logger,
) -> int:
    configure_json_logging()
    try:
        config = config_from_env(dict(os.environ))
    except ConfigError as exc:
        log.error("%s", exc)
        return EXIT_BAD_CONFIG
    return asyncio.run(run(config))
