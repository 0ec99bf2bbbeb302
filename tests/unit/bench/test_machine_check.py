"""The benchmarks' machine check measures both kinds of round trip against a process of its own."""

from tests.bench.machine_check import IDLE_GAP_S, check_machine


def test_the_check_times_round_trips_back_to_back_and_from_idle() -> None:
    check = check_machine()

    for series in (check.busy, check.from_idle):
        assert 0 < series.median_us <= series.mean_us * 10
        assert series.cpu_us >= 0
    # the gap between the idle series' round trips is not counted in them
    assert check.from_idle.median_us < IDLE_GAP_S * 1e6
    assert check.reference_ms > 0
    line = check.render()
    assert line.startswith("machine check: ")
    assert "from idle" in line
    assert "reference Python work" in line
