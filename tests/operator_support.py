"""Shared by the operator's unit and integration tests: the CRDs as data, bodies the way the API server
returns them (schema defaults applied), an OperatorConfig, and in-memory fakes of the three ports."""

import base64
import copy
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from payplane_operator.clients.errors import KafkaAdminError, KubeApiError, SpireApiError
from payplane_operator.reconcile.ports import Deps
from payplane_operator.resources import EntrySpec, Manifest, ObjectRef, TopicSpec, TopicState
from payplane_operator.settings import (
    FIELD_MANAGER,
    IdentityMode,
    KafkaConfig,
    KubeConfig,
    OperatorConfig,
    SpireConfig,
    WorkloadReadiness,
)

REPO = Path(__file__).resolve().parent.parent
CRD_DIR = REPO / "crds"
CRD_FILES = {
    "PaymentRail": "paymentrails.yaml",
    "LedgerShard": "ledgershards.yaml",
    "FraudPolicy": "fraudpolicies.yaml",
}
TRUST_DOMAIN = "payplane.test"
PARENT_ID = "spiffe://payplane.test/payplane/local-node"


def load_crd(kind: str) -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load((CRD_DIR / CRD_FILES[kind]).read_text())
    return crd


def crd_schema(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = load_crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def apply_defaults(schema: Mapping[str, Any], value: Any) -> Any:
    """Structural defaulting as the API server does it: missing properties get their default (deep-copied),
    then defaults apply inside every present value, defaulted ones included."""
    if isinstance(value, dict) and schema.get("type") == "object":
        for key, sub in (schema.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = apply_defaults(sub, value[key])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value:
                value[key] = apply_defaults(extra, value[key])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def body(
    kind: str,
    name: str,
    spec: Mapping[str, Any],
    *,
    namespace: str = "payments",
    generation: int = 1,
    uid: str | None = None,
) -> dict[str, Any]:
    """An object as the API server returns it: metadata filled in, schema defaults applied."""
    manifest = {
        "apiVersion": "payplane.io/v1alpha1",
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid or str(uuid.uuid4()),
            "generation": generation,
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": copy.deepcopy(dict(spec)),
    }
    defaulted: dict[str, Any] = apply_defaults(crd_schema(kind), manifest)
    return defaulted


def rail_spec(**overrides: Any) -> dict[str, Any]:
    return {
        "currency": "EUR",
        "amountLimits": {"maxMinor": 1_000_000},
        "payments": {"database": {"secretRef": {"name": "payments-db"}}},
        **overrides,
    }


def shard_spec(rail: str = "card-eur", first: int = 0, last: int = 7, **overrides: Any) -> dict[str, Any]:
    return {
        "railRef": {"name": rail},
        "partitions": {"first": first, "last": last},
        "database": {"secretRef": {"name": f"{rail}-db"}},
        **overrides,
    }


def policy_spec(**overrides: Any) -> dict[str, Any]:
    return {
        "rules": [
            {"name": "big", "action": "Review", "when": {"amountAbove": {"EUR": 100_000}}},
            {"name": "blocked", "action": "Decline", "when": {"inList": {"field": "AccountId", "list": "deny"}}},
        ],
        "lists": [{"name": "deny", "values": ["acct-1"]}],
        **overrides,
    }


def config(
    mode: IdentityMode = IdentityMode.CLUSTER, readiness: WorkloadReadiness = WorkloadReadiness.OBSERVED
) -> OperatorConfig:
    return OperatorConfig(
        kube=KubeConfig(kubeconfig=None, request_timeout_s=5),
        kafka=KafkaConfig(bootstrap="127.0.0.1:9092", workload_bootstrap="kafka.payplane:9092", request_timeout_s=5),
        spire=SpireConfig(
            server_socket=Path("/nonexistent"),
            trust_domain=TRUST_DOMAIN,
            parent_id=PARENT_ID,
            mode=mode,
            request_timeout_s=5,
        ),
        readiness=readiness,
        drift_interval_s=60,
        peering_name="payplane-operator",
        peering_priority=0,
        peering_lifetime_s=60,
    )


class FakeKube:
    """Server-side apply into a dict; Deployments are 'observed' at once (as the controller would)."""

    def __init__(self) -> None:
        self.objects: dict[ObjectRef, dict[str, Any]] = {}
        self.events: list[dict[str, str]] = []
        self.writes = 0
        self.applies = 0  # server-side applies of children (status writes not counted)
        self.fail: KubeApiError | None = None  # for every apply of a child
        self.fail_status: KubeApiError | None = None  # for status writes

    async def apply(
        self, manifest: Manifest, *, field_manager: str, force: bool = True, subresource: str = ""
    ) -> dict[str, Any]:
        assert field_manager == FIELD_MANAGER
        failure = self.fail_status if subresource == "status" else self.fail
        if failure is not None:
            raise failure
        ref = ObjectRef.of(manifest)
        current = self.objects.get(ref)
        self.applies += subresource != "status"
        if subresource == "status":
            assert current is not None, f"status of missing {ref}"
            if current.get("status") != manifest["status"]:
                current["status"] = copy.deepcopy(manifest["status"])
                self.writes += 1
            return copy.deepcopy(current)
        stored = copy.deepcopy(manifest)
        stored["metadata"]["uid"] = current["metadata"]["uid"] if current else str(uuid.uuid4())
        stored["metadata"]["generation"] = 1
        if ref.kind == "Deployment":
            stored["status"] = {"observedGeneration": 1, "replicas": stored["spec"].get("replicas", 1)}
        if current is None or {k: v for k, v in current.items() if k != "status"} != {
            k: v for k, v in stored.items() if k != "status"
        }:
            self.writes += 1
            self.objects[ref] = stored
        return copy.deepcopy(self.objects[ref])

    async def get(self, ref: ObjectRef) -> dict[str, Any] | None:
        found = self.objects.get(ref)
        return copy.deepcopy(found) if found is not None else None

    async def delete(self, ref: ObjectRef, *, uid: str = "") -> bool:
        found = self.objects.get(ref)
        if found is None or (uid and found["metadata"]["uid"] != uid):
            return False
        del self.objects[ref]
        self.writes += 1
        return True

    async def post_event(
        self, involved: Mapping[str, Any], *, event_type: str, reason: str, message: str, component: str
    ) -> None:
        self.events.append({"type": event_type, "reason": reason, "message": message})

    def put(self, obj: dict[str, Any]) -> None:
        self.objects[ObjectRef.of(obj)] = copy.deepcopy(obj)

    async def get_body(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """The stored version of ``obj`` (with the status the reconciler wrote)."""
        found = await self.get(ObjectRef.of(obj))
        assert found is not None, f"{ObjectRef.of(obj)} is not stored"
        return found

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for r, o in self.objects.items() if r.kind == kind]

    async def list(self, api_version: str, kind: str, namespace: str, label_selector: str = "") -> list[dict[str, Any]]:
        wanted = dict(pair.split("=", 1) for pair in label_selector.split(",") if pair)
        return [
            copy.deepcopy(o)
            for r, o in self.objects.items()
            if (r.api_version, r.kind, r.namespace) == (api_version, kind, namespace)
            and wanted.items() <= (o["metadata"].get("labels") or {}).items()
        ]


class FakeWorkloadStatus:
    """What each pod IP answers on GET /status (absent: no answer)."""

    def __init__(self) -> None:
        self.answers: dict[str, dict[str, Any]] = {}
        self.reads: list[tuple[str, int]] = []

    async def read(self, address: str, port: int) -> Mapping[str, Any] | None:
        self.reads.append((address, port))
        return self.answers.get(address)


class FakeKafka:
    def __init__(self) -> None:
        self.topics: dict[str, TopicState] = {}
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise KafkaAdminError("cannot reach Kafka", retriable=True)

    async def describe(self, names: Sequence[str], config_keys: Sequence[str]) -> dict[str, TopicState | None]:
        self._check()
        return {n: self.topics.get(n) for n in names}

    async def create(self, topics: Sequence[TopicSpec]) -> list[str]:
        self._check()
        created = [t.name for t in topics if t.name not in self.topics]
        for t in topics:
            self.topics.setdefault(t.name, TopicState(t.name, t.partitions, t.replication_factor, dict(t.configs)))
        return created

    async def grow(self, name: str, partitions: int) -> None:
        self._check()
        state = self.topics[name]
        assert partitions > state.partitions, "Kafka refuses to shrink"
        self.topics[name] = TopicState(name, partitions, state.replication_factor, state.configs)

    async def set_configs(self, name: str, configs: Mapping[str, str]) -> None:
        self._check()
        state = self.topics[name]
        self.topics[name] = TopicState(name, state.partitions, state.replication_factor, dict(configs))

    async def delete(self, names: Sequence[str]) -> None:
        self._check()
        for name in names:
            self.topics.pop(name, None)


class FakeSpire:
    def __init__(self) -> None:
        self.entries: dict[str, EntrySpec] = {}
        self.down = False
        self.calls = 0

    def _check(self) -> None:
        self.calls += 1
        if self.down:
            raise SpireApiError("UNAVAILABLE connection refused", retriable=True)

    async def get(self, entry_id: str) -> EntrySpec | None:
        self._check()
        return self.entries.get(entry_id)

    async def create(self, entries: Sequence[EntrySpec]) -> list[str]:
        self._check()
        created = [e.entry_id for e in entries if e.entry_id not in self.entries]
        for entry in entries:
            self.entries.setdefault(entry.entry_id, entry)
        return created

    async def update(self, entries: Sequence[EntrySpec]) -> None:
        self._check()
        for entry in entries:
            self.entries[entry.entry_id] = entry

    async def delete(self, entry_ids: Sequence[str]) -> list[str]:
        self._check()
        return [i for i in entry_ids if self.entries.pop(i, None) is not None]


def secret(name: str, namespace: str = "payments", **data: str) -> dict[str, Any]:
    """A Secret as the API server returns it (values base64-encoded under ``data``)."""
    encoded = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace}, "data": encoded}


# The Secrets rail_spec() and shard_spec() name, present unless a test removes them.
DEFAULT_SECRETS = ("payments-db", "card-eur-db")


def fake_deps(operator_config: OperatorConfig | None = None) -> tuple[Deps, FakeKube, FakeKafka, FakeSpire]:
    kube, kafka, spire = FakeKube(), FakeKafka(), FakeSpire()
    for name in DEFAULT_SECRETS:
        kube.put(secret(name, dsn="postgresql://u@db/x"))
    return Deps(kube=kube, kafka=kafka, spire=spire, config=operator_config or config()), kube, kafka, spire
