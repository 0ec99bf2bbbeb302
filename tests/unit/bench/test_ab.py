"""The A/B tool's reading of a benchmark run and its summary of both sides."""

import json

import pytest

from tests.bench.ab import MACHINE, Run, medians, parse_run


def _output(p50: float, p99: float, reference_ms: int = 150) -> str:
    loop = {
        "name": "open loop (, 1,000/s)",
        "accept_p50_ms": p50,
        "accept_p99_ms": p99,
        "settle_p99_ms": 130.0,
        "cpu_ms_per_payment": {MACHINE: 1.4, "gateway": 0.4},
    }
    return (
        f"machine check: loopback round trips …; reference Python work {reference_ms} ms\n"
        "open loop (, 1,000/s): sent=20000 …\n"
        f"{json.dumps([loop])}\n"
    )


def test_a_run_is_read_from_the_benchmarks_json_line_and_machine_check() -> None:
    run = parse_run("new", _output(9.5, 24.0, reference_ms=233))
    assert run == Run("new", 233.0, 9.5, 24.0, 130.0, {MACHINE: 1.4, "gateway": 0.4})
    assert "accept p50 9.5 ms p99 24.0 ms" in run.render()
    assert "machine 1.400, gateway 0.400" in run.render()


def test_a_run_that_reported_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="no run"):
        parse_run("base", "machine check: …\n[]\n")


def test_each_side_gets_its_medians_and_its_p99s_in_order() -> None:
    runs = [
        parse_run("base", _output(10.0, 40.0)),
        parse_run("new", _output(8.0, 20.0)),
        parse_run("base", _output(12.0, 30.0)),
        parse_run("new", _output(9.0, 26.0)),
        parse_run("base", _output(11.0, 50.0)),
        parse_run("new", _output(7.0, 22.0)),
    ]
    base, new = medians(runs).splitlines()
    assert base.startswith("base: 3 runs, median accept p50 11.0 ms, p99 40.0 ms (40.0, 30.0, 50.0)")
    assert new.startswith("new: 3 runs, median accept p50 8.0 ms, p99 22.0 ms (20.0, 26.0, 22.0)")
    assert "CPU per payment 1.400 ms" in new
