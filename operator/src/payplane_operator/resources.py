"""Value types for what the operator manages, shared by the pure builders (``desired``) and the clients.

Kubernetes children are plain manifests (``Manifest``, a dict as the API takes it); Kafka topics and
SPIRE registration entries live outside Kubernetes and get small frozen types of their own.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Manifest = dict[str, Any]


@dataclass(frozen=True, order=True)
class ObjectRef:
    """Enough to address one Kubernetes object."""

    api_version: str
    kind: str
    namespace: str
    name: str

    @classmethod
    def of(cls, manifest: Mapping[str, Any]) -> "ObjectRef":
        metadata = manifest["metadata"]
        return cls(manifest["apiVersion"], manifest["kind"], metadata.get("namespace", ""), metadata["name"])

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class TopicSpec:
    """One Kafka topic as it should be."""

    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str]


@dataclass(frozen=True)
class TopicState:
    """One Kafka topic as it is."""

    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str]  # only the keys the operator manages


@dataclass(frozen=True, order=True)
class Selector:
    type: str  # e.g. "k8s", "unix"
    value: str  # e.g. "ns:payments", "gid:3000123"

    def __str__(self) -> str:
        return f"{self.type}:{self.value}"


@dataclass(frozen=True)
class EntrySpec:
    """One SPIRE registration entry. ``entry_id`` is derived from the owner, so creation is idempotent."""

    entry_id: str
    spiffe_id: str
    parent_id: str
    selectors: tuple[Selector, ...]  # sorted
    dns_names: tuple[str, ...] = ()
    x509_svid_ttl_s: int = 0  # 0: the server's default
    hint: str = ""
