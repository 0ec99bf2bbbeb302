"""What every workload's ``main`` does: JSON logs, configuration from the environment, then run.

A configuration error is logged and exits with status 2 before anything starts. The event loop is
uvloop's (libuv: a fraction of asyncio's CPU per socket event on the payment path);
``PAYPLANE_EVENT_LOOP=asyncio`` selects the standard library's loop instead. ``PAYPLANE_LOG_LEVEL``
(``debug``, ``info`` — the default — ``warning`` or ``error``) sets the level of payplane's own log
lines; the libraries' stay at INFO.
"""

import asyncio
import gc
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

import uvloop

from payplane.platform.logs import configure_json_logging

EXIT_BAD_CONFIG: Final = 2
GC_GENERATION0_OBJECTS: Final = 20_000
EVENT_LOOPS: Final[dict[str, Callable[[], asyncio.AbstractEventLoop]]] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": asyncio.new_event_loop,
}
LOG_LEVELS: Final = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
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
        logging.getLogger("payplane").setLevel(log_level(os.environ.get("PAYPLANE_LOG_LEVEL", "info")))
        config = config_from_env(dict(os.environ))
        loop_factory = event_loop_factory(os.environ.get("PAYPLANE_EVENT_LOOP", "uvloop"))
    except ConfigError as exc:
        log.error("%s", exc)
        return EXIT_BAD_CONFIG
    tune_garbage_collector()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(run(config))


def stop_when_a_task_dies(
    tasks: list[asyncio.Task[None]], stopping: asyncio.Event, log: logging.Logger
) -> list[BaseException]:
    """A workload's background loop (relay, consumer, cleanup) that ends with an error sets ``stopping``:
    the workload then exits non-zero for its supervisor to restart it, rather than run on without a part
    of its job (serving payments without settling them would leave every new one processing). Returns
    the list the failures are collected in."""
    failures: list[BaseException] = []

    def done(task: asyncio.Task[None]) -> None:
        if task.cancelled() or stopping.is_set():
            return
        error = task.exception()
        if error is not None:
            log.error("a background task failed; stopping", exc_info=error)
            failures.append(error)
            stopping.set()

    for task in tasks:
        task.add_done_callback(done)
    return failures


def log_level(name: str) -> int:
    try:
        return LOG_LEVELS[name.strip().lower()]
    except KeyError:
        raise ConfigError(f"PAYPLANE_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {name!r}") from None


def tune_garbage_collector() -> None:
    """Move what start-up built (modules, configuration) out of the collector's sight and collect the
    youngest generation every ``GC_GENERATION0_OBJECTS`` allocations instead of every 700: each payment
    allocates thousands of short-lived objects that reference counting frees anyway, and the default
    threshold made the cyclic collector a few per cent of every worker's CPU."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GENERATION0_OBJECTS, *gc.get_threshold()[1:])


def event_loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        return EVENT_LOOPS[name]
    except KeyError:
        raise ConfigError(f"PAYPLANE_EVENT_LOOP must be one of {', '.join(EVENT_LOOPS)}, not {name!r}") from None
