"""Status conditions: their types, their reasons, and the value the reconcilers produce.

Conditions follow the Kubernetes shape (type, status, reason, message, lastTransitionTime,
observedGeneration). ``Ready`` summarises the others; each other type describes one dependency.
"""

from dataclasses import dataclass
from enum import StrEnum


class ConditionType(StrEnum):
    READY = "Ready"
    WORKLOADS_READY = "WorkloadsReady"  # Deployments (and their Services, HPAs, PDBs) applied and ready
    TOPICS_READY = "TopicsReady"  # every Kafka topic exists with the right partitions and configs
    IDENTITIES_READY = "IdentitiesReady"  # every workload's SPIRE registration entry exists and matches
    PARTITIONS_COVERED = "PartitionsCovered"  # (rail) the shards own every ledger partition exactly once
    PARTITIONS_VALID = "PartitionsValid"  # (shard) the rail exists and the range lies inside its partitions
    POLICY_VALID = "PolicyValid"  # (policy) the rules can be evaluated; (rail) the referenced policy is usable
    SECRETS_READY = "SecretsReady"  # (rail) the Secrets it names exist and hold their keys
    DATABASE_SECRET_READY = "DatabaseSecretReady"  # noqa: S105 (shard) its database Secret exists and holds the key
    WORKERS_IN_SYNC = "WorkersInSync"  # (policy) every running payment worker of its rails runs the active version


class Reason(StrEnum):
    """Why a condition has its status. Failure reasons are listed in FAILURE_REASONS."""

    # success
    READY = "Ready"
    APPLIED = "Applied"
    TOPICS_IN_SYNC = "TopicsInSync"
    ENTRIES_IN_SYNC = "EntriesInSync"
    COVERED = "AllPartitionsCovered"
    WITHIN_RAIL = "WithinRail"
    VALID = "Valid"
    NO_POLICY = "NoPolicyReferenced"
    SECRETS_FOUND = "SecretsFound"
    WORKERS_IN_SYNC = "AllWorkersInSync"
    NO_WORKERS = "NoWorkers"
    # waiting (not a failure: the next event or the drift timer will re-check)
    RECONCILING = "Reconciling"
    PROGRESSING = "Progressing"
    NOT_READY = "DependenciesNotReady"
    WORKERS_OUT_OF_SYNC = "WorkersOutOfSync"  # a rollout in progress, or a worker that could not load it
    WORKERS_UNREACHABLE = "WorkersUnreachable"  # status Unknown: a started worker did not answer
    NOT_DELIVERED = "NoValidVersion"
    # failures
    INVALID_SPEC = "InvalidSpec"
    KUBERNETES_ERROR = "KubernetesError"
    KAFKA_ERROR = "KafkaError"
    NOT_SUPPORTED = "NotSupported"  # e.g. fewer partitions than the topic has: Kafka cannot remove them
    RESOURCE_CONFLICT = "ResourceConflict"  # a name another object (or namespace) already holds
    SPIRE_ERROR = "SpireError"
    COVERAGE_GAPS = "PartitionGaps"
    COVERAGE_OVERLAPS = "PartitionOverlaps"
    NO_SHARDS = "NoShards"
    RAIL_NOT_FOUND = "RailNotFound"
    RAIL_INVALID = "RailInvalid"
    OUTSIDE_RAIL = "PartitionsOutsideRail"
    POLICY_NOT_FOUND = "PolicyNotFound"
    POLICY_INVALID = "PolicyInvalid"
    SECRET_NOT_FOUND = "SecretNotFound"  # noqa: S105
    SECRET_KEY_MISSING = "SecretKeyMissing"  # noqa: S105


FAILURE_REASONS = frozenset(
    {
        Reason.INVALID_SPEC,
        Reason.KUBERNETES_ERROR,
        Reason.KAFKA_ERROR,
        Reason.NOT_SUPPORTED,
        Reason.RESOURCE_CONFLICT,
        Reason.SPIRE_ERROR,
        Reason.COVERAGE_GAPS,
        Reason.COVERAGE_OVERLAPS,
        Reason.NO_SHARDS,
        Reason.RAIL_NOT_FOUND,
        Reason.RAIL_INVALID,
        Reason.OUTSIDE_RAIL,
        Reason.POLICY_NOT_FOUND,
        Reason.POLICY_INVALID,
        Reason.SECRET_NOT_FOUND,
        Reason.SECRET_KEY_MISSING,
    }
)


class Phase(StrEnum):
    PROVISIONING = "Provisioning"
    READY = "Ready"
    DEGRADED = "Degraded"
    INVALID = "Invalid"


@dataclass(frozen=True)
class Condition:
    """One condition as a reconciler decides it; timestamps are added when it is written."""

    type: ConditionType
    status: bool | None  # None = Unknown
    reason: Reason
    message: str

    @property
    def status_text(self) -> str:
        return {True: "True", False: "False", None: "Unknown"}[self.status]

    @property
    def failed(self) -> bool:
        return self.status is not True and self.reason in FAILURE_REASONS


def ok(condition_type: ConditionType, reason: Reason, message: str) -> Condition:
    return Condition(condition_type, True, reason, message)


def not_ok(condition_type: ConditionType, reason: Reason, message: str) -> Condition:
    return Condition(condition_type, False, reason, message)
