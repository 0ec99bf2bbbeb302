"""Session fixtures that bring the real local infrastructure up (or reuse it) once per test run.

``payplane infra up`` is idempotent: components already healthy are reused, so a developer who keeps
the infrastructure running pays nothing here. A component that cannot be built or started fails the
session with the reason and the log path; nothing is skipped.
"""

import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from kubernetes import client, config

from payplane.devinfra import stack
from payplane.devinfra.settings import InfraSettings, load_settings


@dataclass(frozen=True)
class Infra:
    settings: InfraSettings
    endpoints: dict[str, str]

    def __getitem__(self, key: str) -> str:
        return self.endpoints[key]


@pytest.fixture(scope="session")
def infra() -> Infra:
    settings = load_settings()
    endpoints = stack.up(settings)
    return Infra(settings=settings, endpoints=endpoints)


@pytest.fixture(scope="module")
def api(infra: Infra) -> Iterator[client.ApiClient]:
    """A Kubernetes API client for the local API server (admin credentials)."""
    api_client = config.new_client_from_config(config_file=infra["KUBECONFIG"])
    yield api_client
    api_client.close()


@pytest.fixture(scope="module")
def run_id() -> str:
    """A short id that keeps one test module's Kubernetes objects apart from another's."""
    return uuid.uuid4().hex[:8]


@asynccontextmanager
async def kafka_topics(bootstrap: str, names: Sequence[str], partitions: int = 1) -> AsyncIterator[None]:
    """Topics that exist for the duration of the block on the real local Kafka, deleted afterwards."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(name, partitions, 1) for name in names])
    try:
        yield
    finally:
        await admin.delete_topics(list(names))
        await admin.close()
