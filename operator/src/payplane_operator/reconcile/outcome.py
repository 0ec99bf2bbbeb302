"""What one reconcile step or one whole reconcile produced: values, never exceptions."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from payplane_operator.api.conditions import Condition, ConditionType, Reason, not_ok
from payplane_operator.clients.errors import ClientError
from payplane_operator.limits import EVENT_MESSAGE_CHARS_MAX


class EventType(StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


@dataclass(frozen=True)
class Note:
    """A Kubernetes Event to post about the reconciled object."""

    type: EventType
    reason: str
    message: str

    @classmethod
    def normal(cls, reason: str, message: str) -> "Note":
        return cls(EventType.NORMAL, reason, message[:EVENT_MESSAGE_CHARS_MAX])

    @classmethod
    def warning(cls, reason: str, message: str) -> "Note":
        return cls(EventType.WARNING, reason, message[:EVENT_MESSAGE_CHARS_MAX])


@dataclass(frozen=True)
class StepResult:
    """One dependency's condition, the events worth posting, and whether a retry may help."""

    condition: Condition
    notes: Sequence[Note] = ()
    retry: bool = False
    details: dict[str, Any] = field(default_factory=dict)


def failed_step(condition_type: ConditionType, reason: Reason, error: ClientError, doing: str) -> StepResult:
    """A step that met a failure of the outside world: a False condition that says what and why."""
    message = f"{doing} failed ({error.system}): {error}"
    return StepResult(
        not_ok(condition_type, reason, message), (Note.warning(reason.value, message),), retry=error.retriable
    )


@dataclass(frozen=True)
class Outcome:
    """A whole reconcile: the status written, the events to post, and when to try again (None: no need)."""

    status: dict[str, Any]
    notes: Sequence[Note]
    retry: bool
    ready: bool
