"""A rail's amount limits: request validation, not fraud evaluation (pure).

An amount outside the rail's ``amountLimits`` is the client's mistake, answered at once with a 400
(``amount_too_small`` / ``amount_too_large``, param ``amount``; ``INVALID_ARGUMENT`` over gRPC) and
never recorded; a fraud policy only ever judges payments the rail can carry.
"""

from dataclasses import dataclass

from payplane.payments.errors import ApiError


@dataclass(frozen=True)
class AmountLimits:
    """The inclusive range of one payment's amount, in minor units of the rail's currency."""

    min_minor: int
    max_minor: int

    def __post_init__(self) -> None:
        if not 1 <= self.min_minor <= self.max_minor:
            raise ValueError(f"amount limits must satisfy 1 <= min <= max, got {self.min_minor}..{self.max_minor}")

    def check(self, amount_minor: int, param: str = "amount") -> int:
        """``amount_minor`` if the rail accepts it, else the ApiError a client gets."""
        if amount_minor < self.min_minor:
            raise ApiError("amount_too_small", f"{param} must be at least {self.min_minor} on this rail", param)
        if amount_minor > self.max_minor:
            raise ApiError("amount_too_large", f"{param} must be at most {self.max_minor} on this rail", param)
        return amount_minor
