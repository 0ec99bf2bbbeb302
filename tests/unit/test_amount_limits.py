"""The rail's amount limits are request validation: a stable 400 code naming ``amount``, never a verdict."""

import pytest

from payplane.payments.errors import ApiError
from payplane.payments.limits import AmountLimits
from payplane.services.payment_worker import parse_dsn_list


@pytest.mark.parametrize(
    ("amount", "code"),
    [(1, "amount_too_small"), (49, "amount_too_small"), (5001, "amount_too_large"), (10**15, "amount_too_large")],
)
def test_outside_the_rails_range_is_a_client_error(amount: int, code: str) -> None:
    with pytest.raises(ApiError) as refused:
        AmountLimits(50, 5000).check(amount)
    error = refused.value
    assert (error.code, error.param, error.http_status, error.grpc_status) == (code, "amount", 400, "INVALID_ARGUMENT")
    assert error.to_dict()["type"] == "invalid_request_error"
    assert ("50" if code == "amount_too_small" else "5000") in error.message


@pytest.mark.parametrize("amount", [50, 51, 4999, 5000])
def test_inside_the_range_including_both_bounds_passes(amount: int) -> None:
    assert AmountLimits(50, 5000).check(amount) == amount


@pytest.mark.parametrize(("low", "high"), [(0, 10), (11, 10)])
def test_nonsensical_limits_are_refused_at_start(low: int, high: int) -> None:
    with pytest.raises(ValueError, match="amount limits"):
        AmountLimits(low, high)


def test_ledger_dsns_are_one_per_line_or_comma_separated_on_one_line() -> None:
    assert parse_dsn_list("") == []
    assert parse_dsn_list("postgresql://h/a,postgresql://h/b") == ["postgresql://h/a", "postgresql://h/b"]
    multi_host = "postgresql://h1:5432,h2:5432/a?target_session_attrs=read-write"
    assert parse_dsn_list(f"{multi_host}\npostgresql://h/b\n") == [multi_host, "postgresql://h/b"]
