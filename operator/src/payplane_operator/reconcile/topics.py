"""Make the rail's Kafka topics match the spec: create missing ones, grow partitions, restore configs.

Kafka cannot remove partitions or change a replication factor in place: such a difference is reported
(TopicsReady=False, NotSupported) and left alone, like Strimzi's topic operator does.
"""

from collections.abc import Sequence

from payplane_operator.api.conditions import ConditionType, Reason, not_ok, ok
from payplane_operator.clients.errors import ClientError
from payplane_operator.desired.topics import MANAGED_CONFIGS
from payplane_operator.reconcile.outcome import Note, StepResult, failed_step
from payplane_operator.reconcile.ports import Kafka
from payplane_operator.resources import TopicSpec


async def ensure_topics(kafka: Kafka, desired: Sequence[TopicSpec]) -> StepResult:
    notes: list[Note] = []
    unsupported: list[str] = []
    try:
        actual = await kafka.describe([t.name for t in desired], MANAGED_CONFIGS)
        missing = [t for t in desired if actual.get(t.name) is None]
        for name in await kafka.create(missing):
            topic = next(t for t in missing if t.name == name)
            notes.append(Note.normal("TopicCreated", f"created Kafka topic {name} ({topic.partitions} partitions)"))
        observed = {t.name: t.partitions for t in missing}
        for topic in desired:
            state = actual.get(topic.name)
            if state is None:
                continue
            observed[topic.name] = state.partitions
            if state.partitions < topic.partitions:
                await kafka.grow(topic.name, topic.partitions)
                observed[topic.name] = topic.partitions
                notes.append(
                    Note.normal(
                        "TopicPartitionsIncreased", f"{topic.name}: partitions {state.partitions} → {topic.partitions}"
                    )
                )
            elif state.partitions > topic.partitions:
                unsupported.append(
                    f"{topic.name} has {state.partitions} partitions, the spec asks for "
                    f"{topic.partitions} (Kafka cannot remove partitions)"
                )
            if state.replication_factor != topic.replication_factor:
                unsupported.append(
                    f"{topic.name} has replication factor {state.replication_factor}, the spec "
                    f"asks for {topic.replication_factor} (needs a partition reassignment)"
                )
            drifted = {k: v for k, v in topic.configs.items() if state.configs.get(k) != v}
            if drifted:
                await kafka.set_configs(topic.name, topic.configs)
                changes = ", ".join(f"{k}={v}" for k, v in sorted(drifted.items()))
                notes.append(Note.normal("TopicConfigured", f"{topic.name}: set {changes}"))
    except ClientError as error:
        return failed_step(ConditionType.TOPICS_READY, Reason.KAFKA_ERROR, error, "reconciling Kafka topics")
    details = {"topics": [{"name": t.name, "partitions": observed[t.name]} for t in desired]}
    if unsupported:
        message = "; ".join(unsupported)
        return StepResult(
            not_ok(ConditionType.TOPICS_READY, Reason.NOT_SUPPORTED, message),
            [*notes, Note.warning(Reason.NOT_SUPPORTED.value, message)],
            details=details,
        )
    condition = ok(ConditionType.TOPICS_READY, Reason.TOPICS_IN_SYNC, f"{len(desired)} topics in sync")
    return StepResult(condition, notes, details=details)


async def delete_topics(kafka: Kafka, desired: Sequence[TopicSpec]) -> list[Note]:
    names = [t.name for t in desired]
    await kafka.delete(names)
    return [Note.normal("TopicsDeleted", f"deleted Kafka topics {', '.join(names)} (deletionPolicy: Delete)")]
