"""The Kafka topics of a rail, named by ``payplane_contracts.topics`` (the runtime uses the same names)."""

from typing import Final

from payplane_contracts.identity import WorkloadRole
from payplane_contracts.topics import RailTopics
from payplane_operator.api.v1alpha1 import PaymentRail
from payplane_operator.limits import MS_PER_S
from payplane_operator.resources import TopicSpec

# The consumers that dead-letter what they cannot process; each gets ``payplane.<rail>.dlq.<role>``.
DEAD_LETTER_ROLES: Final = (WorkloadRole.LEDGER_WRITER, WorkloadRole.PAYMENT_WORKER)
# The topic configs the operator owns; drift in any of them is corrected.
MANAGED_CONFIGS: Final = ("cleanup.policy", "retention.ms", "min.insync.replicas")


def rail_topics(rail: PaymentRail) -> list[TopicSpec]:
    """Commands are partitioned like the ledger (``ledger.partitions``); the rest by ``topics.partitions``."""
    spec = rail.spec
    names = RailTopics(rail.meta.name)
    configs = {
        "cleanup.policy": "delete",
        "retention.ms": str(spec.topic_retention_s * MS_PER_S),
        "min.insync.replicas": str(spec.min_insync_replicas),
    }
    others = [names.ledger_results, names.payment_events, *(names.dead_letters(r.value) for r in DEAD_LETTER_ROLES)]
    return [
        TopicSpec(names.ledger_commands, spec.ledger_partitions, spec.replication_factor, configs),
        *(TopicSpec(name, spec.topic_partitions, spec.replication_factor, configs) for name in others),
    ]
