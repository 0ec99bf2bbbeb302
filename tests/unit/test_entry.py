"""Every workload's start: the event loop named by PAYPLANE_EVENT_LOOP, a bad name refused before anything
runs, the garbage collector tuned."""

import asyncio
import gc
import logging
from collections.abc import Iterator

import pytest
import uvloop

from payplane.services import entry


def test_the_event_loop_is_uvloop_unless_asyncio_is_asked_for() -> None:
    assert entry.event_loop_factory("uvloop") is uvloop.new_event_loop
    assert entry.event_loop_factory("asyncio") is asyncio.new_event_loop


@pytest.fixture(autouse=True)
def _keep_the_test_runners_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(entry, "configure_json_logging", lambda: None)
    level = logging.getLogger("payplane").level
    yield
    logging.getLogger("payplane").setLevel(level)


@pytest.mark.parametrize(
    ("name", "level"), [("debug", logging.DEBUG), ("INFO", logging.INFO), (" warning ", logging.WARNING)]
)
def test_payplane_log_level_sets_the_level_of_payplanes_logs(
    monkeypatch: pytest.MonkeyPatch, name: str, level: int
) -> None:
    monkeypatch.setenv("PAYPLANE_LOG_LEVEL", name)

    async def run(config: str) -> int:
        return 0

    assert entry.serve_from_env(lambda env: "config", run, logging.getLogger("test")) == 0
    gc.unfreeze()
    assert logging.getLogger("payplane").level == level


@pytest.mark.parametrize(("variable", "value"), [("PAYPLANE_EVENT_LOOP", "tokio"), ("PAYPLANE_LOG_LEVEL", "verbose")])
def test_an_unknown_choice_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    ran: list[object] = []

    async def run(config: object) -> int:
        ran.append(config)
        return 0

    status = entry.serve_from_env(lambda env: "config", run, logging.getLogger("test"))
    assert status == entry.EXIT_BAD_CONFIG
    assert ran == []


def test_a_workload_runs_on_the_chosen_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYPLANE_EVENT_LOOP", "uvloop")
    threshold = gc.get_threshold()
    loops: list[asyncio.AbstractEventLoop] = []

    async def run(config: str) -> int:
        loops.append(asyncio.get_running_loop())
        return 7 if config == "config" else 1

    try:
        assert entry.serve_from_env(lambda env: "config", run, logging.getLogger("test")) == 7
        assert isinstance(loops[0], uvloop.Loop)
        assert gc.get_threshold()[0] == entry.GC_GENERATION0_OBJECTS
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
