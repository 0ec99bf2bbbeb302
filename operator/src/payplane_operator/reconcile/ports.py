"""What the reconcilers need from the outside world, as Protocols.

``payplane_operator.clients`` implements them against the real systems; unit tests pass in-memory fakes.
"""

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from payplane_operator.resources import EntrySpec, Manifest, ObjectRef, TopicSpec, TopicState
from payplane_operator.settings import OperatorConfig


class Kube(Protocol):
    async def apply(
        self, manifest: Manifest, *, field_manager: str, force: bool = True, subresource: str = ""
    ) -> dict[str, Any]: ...

    async def get(self, ref: ObjectRef) -> dict[str, Any] | None: ...

    async def list(
        self, api_version: str, kind: str, namespace: str, label_selector: str = ""
    ) -> list[dict[str, Any]]: ...

    async def delete(self, ref: ObjectRef, *, uid: str = "") -> bool: ...

    async def post_event(
        self, involved: Mapping[str, Any], *, event_type: str, reason: str, message: str, component: str
    ) -> None: ...


class Kafka(Protocol):
    async def describe(self, names: Sequence[str], config_keys: Sequence[str]) -> dict[str, TopicState | None]: ...

    async def create(self, topics: Sequence[TopicSpec]) -> list[str]: ...

    async def grow(self, name: str, partitions: int) -> None: ...

    async def set_configs(self, name: str, configs: Mapping[str, str]) -> None: ...

    async def delete(self, names: Sequence[str]) -> None: ...


class Spire(Protocol):
    async def get(self, entry_id: str) -> EntrySpec | None: ...

    async def create(self, entries: Sequence[EntrySpec]) -> list[str]: ...

    async def update(self, entries: Sequence[EntrySpec]) -> None: ...

    async def delete(self, entry_ids: Sequence[str]) -> list[str]: ...


class WorkloadStatus(Protocol):
    async def read(self, address: str, port: int) -> Mapping[str, Any] | None:
        """What the pod at ``address`` reports on ``GET /status`` (None: unreachable or unreadable)."""
        ...


class NoWorkloadStatus:
    """Nothing is reachable (unit tests that do not look at pods)."""

    async def read(self, address: str, port: int) -> Mapping[str, Any] | None:
        return None


class Metrics(Protocol):
    def reconciled(
        self, kind: str, key: Hashable, *, ready: bool, retry: bool, seconds: float, light: bool = False
    ) -> None: ...

    def forget(self, kind: str, key: Hashable) -> None: ...


class NoMetrics:
    """When nothing scrapes the operator (unit tests, ``PAYPLANE_METRICS_PORT`` unset)."""

    def reconciled(
        self, kind: str, key: Hashable, *, ready: bool, retry: bool, seconds: float, light: bool = False
    ) -> None:
        pass

    def forget(self, kind: str, key: Hashable) -> None:
        pass


@dataclass(frozen=True)
class Deps:
    """Everything a reconciler touches besides its arguments."""

    kube: Kube
    kafka: Kafka
    spire: Spire
    config: OperatorConfig
    metrics: Metrics = field(default_factory=NoMetrics)
    workload_status: WorkloadStatus = field(default_factory=NoWorkloadStatus)
