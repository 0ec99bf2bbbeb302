"""The FraudPolicy vocabulary the operator validates and the payment workers evaluate: one definition, so
a value the CRD accepts is one the workers understand. Standard library only."""

import re
from enum import StrEnum
from typing import Final

_DURATION: Final = re.compile(r"^(?:[0-9]{1,6}[hms])+$")
_DURATION_PART: Final = re.compile(r"([0-9]{1,6})([hms])")
_SECONDS_PER_UNIT: Final = {"h": 3600, "m": 60, "s": 1}


class FraudAction(StrEnum):
    ALLOW = "Allow"
    REVIEW = "Review"
    DECLINE = "Decline"


class ListField(StrEnum):
    """The payment field an ``inList`` rule looks up."""

    ACCOUNT_ID = "AccountId"
    CLIENT_ID = "ClientId"
    COUNTRY = "Country"
    CARD_BIN = "CardBin"


def parse_duration_s(text: str) -> int:
    """``24h`` / ``90m`` / ``1h30m`` / ``45s`` → seconds (the format the CRDs accept); ValueError otherwise."""
    if not _DURATION.fullmatch(text):
        raise ValueError(f"{text!r} is not a duration such as 24h, 90m or 1h30m")
    return sum(int(n) * _SECONDS_PER_UNIT[unit] for n, unit in _DURATION_PART.findall(text))
