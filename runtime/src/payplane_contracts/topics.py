"""Kafka topic and consumer-group names for a rail.

The operator creates these topics; the runtime produces to and consumes from them. Names are derived,
never configured twice. Rail names are Kubernetes object names (DNS-1123 labels), which are also
valid in Kafka topic names.
"""

import re
from dataclasses import dataclass
from typing import Final

TOPIC_PREFIX: Final = "payplane"
_RAIL_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class RailNameError(ValueError):
    """A rail name that is not a DNS-1123 label."""


def _checked_rail(rail: str) -> str:
    if not _RAIL_NAME.match(rail):
        raise RailNameError(f"rail name must be a DNS-1123 label (a-z, 0-9, '-', at most 63), got {rail!r}")
    return rail


@dataclass(frozen=True)
class RailTopics:
    """Every topic one rail uses."""

    rail: str

    def __post_init__(self) -> None:
        _checked_rail(self.rail)

    @property
    def ledger_commands(self) -> str:
        """Transfer commands for the ledger writers; partitioned like the ledger, keyed by account."""
        return f"{TOPIC_PREFIX}.{self.rail}.ledger.commands"

    @property
    def ledger_results(self) -> str:
        """Per-transfer outcomes published by the ledger writers' outbox for the payment worker."""
        return f"{TOPIC_PREFIX}.{self.rail}.ledger.results"

    @property
    def payment_events(self) -> str:
        """Payment lifecycle events (the payment worker's outbox); feeds webhooks and projections."""
        return f"{TOPIC_PREFIX}.{self.rail}.payments.events"

    def dead_letters(self, consumer_role: str) -> str:
        """The dead-letter topic of one consuming workload role (``ledger-writer``, ``payment-worker``):
        records it could not process, with the reason. One per role, shared by all its replicas."""
        return f"{TOPIC_PREFIX}.{self.rail}.dlq.{consumer_role}"

    def all_primary(self) -> list[str]:
        return [self.ledger_commands, self.ledger_results, self.payment_events]


def consumer_group(rail: str, role: str) -> str:
    """The consumer group of one workload role on one rail, e.g. ``payplane.card-eur.ledger-writer``."""
    return f"{TOPIC_PREFIX}.{_checked_rail(rail)}.{role}"
