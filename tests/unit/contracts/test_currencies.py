"""ISO 4217 currencies: exponents of the well-known ones, refusal of everything else."""

import pytest

from payplane_contracts.currencies import MINOR_UNIT_EXPONENT, UnknownCurrencyError, exponent, is_known


@pytest.mark.parametrize(
    ("code", "digits"),
    [
        ("EUR", 2),
        ("USD", 2),
        ("GBP", 2),
        ("JPY", 0),
        ("KRW", 0),
        ("KWD", 3),
        ("BHD", 3),
        ("CHF", 2),
        ("ISK", 0),
        ("CLP", 0),
    ],
)
def test_exponents(code: str, digits: int) -> None:
    assert exponent(code) == digits


@pytest.mark.parametrize("code", ["eur", "EU", "EURO", "XXX", "XTS", "XAU", "", "BTC", 978, None])
def test_unknown_codes_are_refused(code: object) -> None:
    assert not is_known(code)
    with pytest.raises(UnknownCurrencyError, match="ISO 4217"):
        exponent(code)  # type: ignore[arg-type]


def test_table_is_well_formed() -> None:
    assert len(MINOR_UNIT_EXPONENT) > 150
    assert all(len(code) == 3 and code.isupper() and code.isalpha() for code in MINOR_UNIT_EXPONENT)
    assert set(MINOR_UNIT_EXPONENT.values()) == {0, 2, 3}
