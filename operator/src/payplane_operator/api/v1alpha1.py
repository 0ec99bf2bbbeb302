"""payplane.io/v1alpha1: PaymentRail, LedgerShard and FraudPolicy as frozen dataclasses.

``parse_*`` turn an object body (as the API server returns it, defaults applied by the CRD schema) into
these types, or raise InvalidSpecError naming the field. The CRD schema is the single source of
defaults: fields it defaults are required here, because the API server fills them on every read.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, TypeVar

from payplane_contracts.fraud_policy import FraudAction, ListField, parse_duration_s
from payplane_contracts.partitions import PARTITION_COUNT_MAX
from payplane_operator.errors import InvalidSpecError

GROUP: Final = "payplane.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
PARTITION_INDEX_MAX: Final = PARTITION_COUNT_MAX - 1
# The gateway's request size bound (spec.gateway.requestBodyMaxBytes); the CRD schema carries the same numbers.
REQUEST_BODY_BYTES_MIN: Final = 4096
REQUEST_BODY_BYTES_MAX: Final = 1024 * 1024
E = TypeVar("E", bound=StrEnum)


class Kind(StrEnum):
    PAYMENT_RAIL = "PaymentRail"
    LEDGER_SHARD = "LedgerShard"
    FRAUD_POLICY = "FraudPolicy"

    @property
    def plural(self) -> str:
        return {"PaymentRail": "paymentrails", "LedgerShard": "ledgershards", "FraudPolicy": "fraudpolicies"}[
            self.value
        ]


class Exposure(StrEnum):
    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"


class PullPolicy(StrEnum):
    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


class DeletionPolicy(StrEnum):
    RETAIN = "Retain"
    DELETE = "Delete"


class PolicyMode(StrEnum):
    ENFORCE = "Enforce"
    SHADOW = "Shadow"


@dataclass(frozen=True)
class ObjectMeta:
    """What the operator needs of metadata: identity, generation, and whether deletion has begun."""

    namespace: str
    name: str
    uid: str
    generation: int
    deleting: bool = False
    creation_timestamp: str = ""


@dataclass(frozen=True)
class SecretKey:
    """One key of a Secret in the object's namespace."""

    name: str
    key: str


@dataclass(frozen=True)
class Autoscaling:
    enabled: bool
    min_replicas: int
    max_replicas: int
    target_cpu_percent: int


@dataclass(frozen=True)
class Scaling:
    replicas: int
    autoscaling: Autoscaling

    @property
    def desired_replicas(self) -> int:
        """What the workload should run now, as far as the spec says (the HPA decides within its bounds)."""
        return self.autoscaling.min_replicas if self.autoscaling.enabled else self.replicas


@dataclass(frozen=True)
class RailSpec:
    currency: str
    min_amount_minor: int
    max_amount_minor: int
    requests_per_second: int
    burst: int
    idempotency_retention_s: int
    gateway_exposure: Exposure
    gateway_port: int
    gateway_body_bytes_max: int
    gateway_scaling: Scaling
    worker_scaling: Scaling
    ledger_partitions: int
    topic_partitions: int
    replication_factor: int
    min_insync_replicas: int
    topic_retention_s: int
    topic_deletion: DeletionPolicy
    fraud_policy: str | None
    image: str
    pull_policy: PullPolicy
    payments_secret: SecretKey
    redis_secret: SecretKey | None


@dataclass(frozen=True)
class PaymentRail:
    meta: ObjectMeta
    spec: RailSpec


@dataclass(frozen=True)
class ShardSpec:
    rail: str
    first_partition: int
    last_partition: int
    database_secret: str
    database_secret_key: str
    writers: Scaling

    @property
    def partition_count(self) -> int:
        return self.last_partition - self.first_partition + 1


@dataclass(frozen=True)
class LedgerShard:
    meta: ObjectMeta
    spec: ShardSpec


@dataclass(frozen=True)
class RuleCondition:
    amount_above: Mapping[str, int]  # currency → minor units; empty when not used
    velocity_window_s: int | None
    velocity_max_count: int | None
    in_list_field: ListField | None
    in_list: str | None


@dataclass(frozen=True)
class FraudRule:
    name: str
    action: FraudAction
    when: RuleCondition


@dataclass(frozen=True)
class PolicySpec:
    mode: PolicyMode
    default_action: FraudAction
    rules: tuple[FraudRule, ...]
    lists: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class FraudPolicy:
    meta: ObjectMeta
    spec: PolicySpec
    raw_spec: Mapping[str, Any]  # hashed into the policy's version, delivered to workers as is


class _Fields:
    """Typed access to one object of a body, with errors that name the full field path."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, Mapping):
            raise InvalidSpecError(path, f"must be an object, got {type(data).__name__}")
        self.data: Mapping[str, Any] = data
        self.path = path

    def at(self, key: str) -> str:
        return f"{self.path}.{key}"

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def obj(self, key: str) -> "_Fields":
        if key not in self.data:
            raise InvalidSpecError(self.at(key), "is required")
        return _Fields(self.data[key], self.at(key))

    def integer(self, key: str, low: int, high: int) -> int:
        value = self.data.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidSpecError(self.at(key), f"must be an integer, got {value!r}")
        if not low <= value <= high:
            raise InvalidSpecError(self.at(key), f"must be within {low}..{high}, got {value}")
        return value

    def boolean(self, key: str) -> bool:
        value = self.data.get(key)
        if not isinstance(value, bool):
            raise InvalidSpecError(self.at(key), f"must be true or false, got {value!r}")
        return value

    def string(self, key: str, pattern: str | None = None) -> str:
        value = self.data.get(key)
        if not isinstance(value, str) or not value:
            raise InvalidSpecError(self.at(key), f"must be a non-empty string, got {value!r}")
        if pattern is not None and not re.fullmatch(pattern, value):
            raise InvalidSpecError(self.at(key), f"{value!r} does not match {pattern}")
        return value

    def choice(self, key: str, enum: type[E]) -> E:
        value = self.data.get(key)
        try:
            return enum(str(value))
        except ValueError:
            allowed = ", ".join(member.value for member in enum)
            raise InvalidSpecError(self.at(key), f"must be one of {allowed}, got {value!r}") from None

    def duration_s(self, key: str, low_s: int, high_s: int) -> int:
        text = self.string(key)
        try:
            seconds = parse_duration_s(text)
        except ValueError as exc:
            raise InvalidSpecError(self.at(key), str(exc)) from None
        if not low_s <= seconds <= high_s:
            raise InvalidSpecError(self.at(key), f"{text} is outside {low_s}s..{high_s}s")
        return seconds


def parse_meta(body: Mapping[str, Any]) -> ObjectMeta:
    meta = _Fields(body.get("metadata"), "metadata")
    return ObjectMeta(
        namespace=meta.string("namespace"),
        name=meta.string("name"),
        uid=meta.string("uid"),
        generation=meta.integer("generation", 0, 2**63 - 1),
        deleting=meta.has("deletionTimestamp"),
        creation_timestamp=str(meta.data.get("creationTimestamp") or ""),
    )


def _scaling(fields: _Fields) -> Scaling:
    auto = fields.obj("autoscaling")
    scaling = Scaling(
        replicas=fields.integer("replicas", 0, 100),
        autoscaling=Autoscaling(
            enabled=auto.boolean("enabled"),
            min_replicas=auto.integer("minReplicas", 1, 100),
            max_replicas=auto.integer("maxReplicas", 1, 100),
            target_cpu_percent=auto.integer("targetCPUUtilizationPercent", 10, 100),
        ),
    )
    if scaling.autoscaling.min_replicas > scaling.autoscaling.max_replicas:
        raise InvalidSpecError(auto.at("minReplicas"), "must not exceed maxReplicas")
    return scaling


def parse_rail(body: Mapping[str, Any]) -> PaymentRail:
    spec = _Fields(body.get("spec"), "spec")
    amounts = spec.obj("amountLimits")
    rates = spec.obj("rateLimits")
    gateway = spec.obj("gateway")
    topics = spec.obj("topics")
    images = spec.obj("images")
    policy_ref = spec.obj("fraudPolicyRef").string("name") if spec.has("fraudPolicyRef") else None
    payments = spec.obj("payments").obj("database").obj("secretRef")
    redis = spec.obj("redis").obj("secretRef") if spec.has("redis") else None
    rail = RailSpec(
        currency=spec.string("currency", r"[A-Z]{3}"),
        min_amount_minor=amounts.integer("minMinor", 1, 10**15),
        max_amount_minor=amounts.integer("maxMinor", 1, 10**15),
        requests_per_second=rates.integer("requestsPerSecond", 1, 100_000),
        burst=rates.integer("burst", 1, 1_000_000),
        idempotency_retention_s=spec.obj("idempotency").duration_s("retention", 3600, 720 * 3600),
        gateway_exposure=gateway.choice("exposure", Exposure),
        gateway_port=gateway.integer("port", 1, 65535),
        gateway_body_bytes_max=gateway.integer("requestBodyMaxBytes", REQUEST_BODY_BYTES_MIN, REQUEST_BODY_BYTES_MAX),
        gateway_scaling=_scaling(gateway.obj("scaling")),
        worker_scaling=_scaling(spec.obj("paymentWorker").obj("scaling")),
        ledger_partitions=spec.obj("ledger").integer("partitions", 1, PARTITION_INDEX_MAX + 1),
        topic_partitions=topics.integer("partitions", 1, PARTITION_INDEX_MAX + 1),
        replication_factor=topics.integer("replicationFactor", 1, 7),
        min_insync_replicas=topics.integer("minInSyncReplicas", 1, 7),
        topic_retention_s=topics.duration_s("retention", 3600, 8760 * 3600),
        topic_deletion=topics.choice("deletionPolicy", DeletionPolicy),
        fraud_policy=policy_ref,
        image=images.string("runtime"),
        pull_policy=images.choice("pullPolicy", PullPolicy),
        payments_secret=SecretKey(payments.string("name"), payments.string("key")),
        redis_secret=SecretKey(redis.string("name"), redis.string("key")) if redis else None,
    )
    if rail.min_amount_minor > rail.max_amount_minor:
        raise InvalidSpecError(amounts.at("minMinor"), "must not exceed maxMinor")
    if rail.min_insync_replicas > rail.replication_factor:
        raise InvalidSpecError(topics.at("minInSyncReplicas"), "must not exceed replicationFactor")
    return PaymentRail(meta=parse_meta(body), spec=rail)


def parse_shard(body: Mapping[str, Any]) -> LedgerShard:
    spec = _Fields(body.get("spec"), "spec")
    partitions = spec.obj("partitions")
    secret = spec.obj("database").obj("secretRef")
    shard = ShardSpec(
        rail=spec.obj("railRef").string("name"),
        first_partition=partitions.integer("first", 0, PARTITION_INDEX_MAX),
        last_partition=partitions.integer("last", 0, PARTITION_INDEX_MAX),
        database_secret=secret.string("name"),
        database_secret_key=secret.string("key"),
        writers=_scaling(spec.obj("writers")),
    )
    if shard.first_partition > shard.last_partition:
        raise InvalidSpecError(partitions.at("first"), "must not exceed partitions.last")
    return LedgerShard(meta=parse_meta(body), spec=shard)


def _rule_condition(when: _Fields) -> RuleCondition:
    amount_above: dict[str, int] = {}
    if when.has("amountAbove"):
        thresholds = when.obj("amountAbove")
        for currency in thresholds.data:
            if not re.fullmatch(r"[A-Z]{3}", currency):
                raise InvalidSpecError(thresholds.at(currency), "keys must be ISO 4217 codes")
            amount_above[currency] = thresholds.integer(currency, 0, 10**15)
    velocity = when.obj("velocity") if when.has("velocity") else None
    in_list = when.obj("inList") if when.has("inList") else None
    condition = RuleCondition(
        amount_above=amount_above,
        velocity_window_s=velocity.duration_s("window", 1, 720 * 3600) if velocity else None,
        velocity_max_count=velocity.integer("maxCount", 1, 1_000_000) if velocity else None,
        in_list_field=in_list.choice("field", ListField) if in_list else None,
        in_list=in_list.string("list") if in_list else None,
    )
    if not (condition.amount_above or velocity or in_list):
        raise InvalidSpecError(when.path, "a rule needs at least one condition (amountAbove, velocity or inList)")
    return condition


def parse_policy(body: Mapping[str, Any]) -> FraudPolicy:
    spec = _Fields(body.get("spec"), "spec")
    lists: dict[str, tuple[str, ...]] = {}
    for index, raw in enumerate(spec.data.get("lists") or []):
        entry = _Fields(raw, f"spec.lists[{index}]")
        name = entry.string("name")
        values = entry.data.get("values")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise InvalidSpecError(entry.at("values"), "must be a list of strings")
        if name in lists:
            raise InvalidSpecError(entry.at("name"), f"duplicate list name {name!r}")
        lists[name] = tuple(values)
    rules: list[FraudRule] = []
    for index, raw in enumerate(spec.data.get("rules") or []):
        entry = _Fields(raw, f"spec.rules[{index}]")
        rule = FraudRule(
            name=entry.string("name"),
            action=entry.choice("action", FraudAction),
            when=_rule_condition(entry.obj("when")),
        )
        if any(existing.name == rule.name for existing in rules):
            raise InvalidSpecError(entry.at("name"), f"duplicate rule name {rule.name!r}")
        if rule.when.in_list is not None and rule.when.in_list not in lists:
            raise InvalidSpecError(entry.at("when.inList.list"), f"names no entry of spec.lists: {rule.when.in_list!r}")
        rules.append(rule)
    policy = PolicySpec(
        mode=spec.choice("mode", PolicyMode),
        default_action=spec.choice("defaultAction", FraudAction),
        rules=tuple(rules),
        lists=lists,
    )
    return FraudPolicy(meta=parse_meta(body), spec=policy, raw_spec=spec.data)
