"""The one place where the operator's outcomes and errors become kopf's retry vocabulary."""

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import kopf

from payplane_operator.clients.errors import ClientError
from payplane_operator.errors import InvalidSpecError
from payplane_operator.limits import RETRY_DELAY_S_MAX, RETRY_DELAY_S_MIN
from payplane_operator.reconcile.controller import Controller
from payplane_operator.reconcile.outcome import Outcome

T = TypeVar("T")


def controller_of(memo: Any) -> Controller:
    return cast(Controller, memo.controller)


def retry_delay_s(retry: int) -> float:
    """1, 2, 4, … seconds, at most a minute."""
    return float(min(RETRY_DELAY_S_MIN * 2 ** min(retry, 16), RETRY_DELAY_S_MAX))


def settle(outcome: Outcome, retry: int) -> None:
    """A reconcile that met a temporary failure is retried by kopf with backoff; the status says why."""
    if outcome.retry:
        delay = retry_delay_s(retry)
        raise kopf.TemporaryError(
            f"a dependency failed (see status.conditions); retrying in {delay:.0f} s", delay=delay
        )


async def guarded(call: Callable[[], Awaitable[T]], retry: int) -> T:
    """Run a finalizer step: temporary failures retry with backoff, permanent ones stop with the reason."""
    try:
        return await call()
    except ClientError as error:
        if error.retriable:
            raise kopf.TemporaryError(str(error), delay=retry_delay_s(retry)) from error
        raise kopf.PermanentError(str(error)) from error
    except InvalidSpecError as error:
        raise kopf.PermanentError(str(error)) from error
