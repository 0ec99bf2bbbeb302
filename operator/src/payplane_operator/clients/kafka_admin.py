"""Kafka's admin API through aiokafka: describe, create, grow, configure and delete topics.

Describing never creates: the metadata request is sent with ``allow_auto_topic_creation=false``
(aiokafka's ``describe_topics`` would let a broker with ``auto.create.topics.enable`` create a missing
topic with default settings), which takes aiokafka's request-level API.
"""

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Final

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError
from aiokafka.protocol.metadata import MetadataRequest

from payplane_operator.clients.errors import KafkaAdminError
from payplane_operator.resources import TopicSpec, TopicState
from payplane_operator.settings import KafkaConfig

NO_ERROR: Final = 0
UNKNOWN_TOPIC: Final = 3
TOPIC_ALREADY_EXISTS: Final = 36
# Errors a retry can cure: leader/controller moves, timeouts, a topic still being created or deleted.
_RETRIABLE: Final = frozenset({5, 6, 7, 13, 14, 15, 41, 51, 54, 56, 89})
_ERROR_NAMES: Final = {
    3: "UnknownTopicOrPartition",
    37: "InvalidPartitions",
    38: "InvalidReplicationFactor",
    40: "InvalidConfig",
    41: "NotController",
    42: "InvalidRequest",
    7: "RequestTimedOut",
}


def _check(code: int, message: str | None, what: str) -> None:
    if code == NO_ERROR:
        return
    name = _ERROR_NAMES.get(code, f"error {code}")
    raise KafkaAdminError(
        f"{what}: {name}{': ' + message if message else ''}", retriable=code in _RETRIABLE, code=str(code)
    )


class KafkaAdmin:
    """One admin connection, started on first use and restarted after a connection failure."""

    def __init__(self, config: KafkaConfig) -> None:
        self._config = config
        self._admin: AIOKafkaAdminClient | None = None
        self._lock = asyncio.Lock()

    async def _client(self) -> Any:
        async with self._lock:
            if self._admin is None:
                admin = AIOKafkaAdminClient(
                    bootstrap_servers=self._config.bootstrap,
                    client_id="payplane-operator",
                    request_timeout_ms=int(self._config.request_timeout_s * 1000),
                )
                try:
                    await asyncio.wait_for(admin.start(), self._config.request_timeout_s)
                except (KafkaError, OSError, TimeoutError) as exc:
                    await admin.close()
                    raise KafkaAdminError(
                        f"cannot reach Kafka at {self._config.bootstrap}: {exc!r}", retriable=True
                    ) from exc
                self._admin = admin
            return self._admin

    async def close(self) -> None:
        async with self._lock:
            if self._admin is not None:
                await self._admin.close()
                self._admin = None

    async def _call(self, what: str, call: Any) -> Any:
        """Run one admin call; on transport failure drop the connection so the next call reconnects."""
        admin = await self._client()
        try:
            return await asyncio.wait_for(call(admin), self._config.request_timeout_s)
        except KafkaAdminError:
            raise
        except (KafkaError, OSError, TimeoutError) as exc:
            retriable = bool(getattr(exc, "retriable", True)) or isinstance(exc, OSError | TimeoutError)
            if isinstance(exc, OSError | TimeoutError):
                await self.close()
            raise KafkaAdminError(f"{what}: {exc!r}", retriable=retriable) from exc

    async def describe(self, names: Sequence[str], config_keys: Sequence[str]) -> dict[str, TopicState | None]:
        """Partitions, replication factor and the given configs of each topic; None for a missing topic."""
        if not names:
            return {}
        request = MetadataRequest(list(names), allow_auto_topic_creation=False)
        metadata = (await self._call("describe topics", lambda admin: admin._send_request(request))).to_object()
        found: dict[str, tuple[int, int]] = {}
        for topic in metadata["topics"]:
            if topic["error_code"] == UNKNOWN_TOPIC:
                continue
            _check(topic["error_code"], None, f"describe topic {topic['topic']}")
            partitions = topic["partitions"]
            found[topic["topic"]] = (len(partitions), len(partitions[0]["replicas"]) if partitions else 0)
        configs = await self._configs(list(found), config_keys)
        return {
            name: TopicState(name, *found[name], configs.get(name, {})) if name in found else None for name in names
        }

    async def _configs(self, names: list[str], keys: Sequence[str]) -> dict[str, dict[str, str]]:
        if not names:
            return {}
        resources = [ConfigResource(ConfigResourceType.TOPIC, name, dict.fromkeys(keys)) for name in names]
        responses = await self._call("describe topic configs", lambda admin: admin.describe_configs(resources))
        result: dict[str, dict[str, str]] = {}
        for response in responses:
            for resource in response.to_object()["resources"]:
                if resource["error_code"] == UNKNOWN_TOPIC:
                    continue  # deleted since the metadata request; the next reconcile recreates it
                _check(resource["error_code"], resource["error_message"], f"configs of {resource['resource_name']}")
                result[resource["resource_name"]] = {
                    entry["config_names"]: entry["config_value"] for entry in resource["config_entries"]
                }
        return result

    async def create(self, topics: Sequence[TopicSpec]) -> list[str]:
        """Create topics; returns those created now (one that already exists is not an error)."""
        if not topics:
            return []
        new = [NewTopic(t.name, t.partitions, t.replication_factor, topic_configs=dict(t.configs)) for t in topics]
        response = await self._call("create topics", lambda admin: admin.create_topics(new))
        created = []
        for result in response.to_object()["topic_errors"]:
            if result["error_code"] == TOPIC_ALREADY_EXISTS:
                continue
            _check(result["error_code"], result["error_message"], f"create topic {result['topic']}")
            created.append(result["topic"])
        return created

    async def grow(self, name: str, partitions: int) -> None:
        await self._call(
            f"grow {name} to {partitions} partitions",
            lambda admin: admin.create_partitions({name: NewPartitions(partitions)}),
        )

    async def set_configs(self, name: str, configs: Mapping[str, str]) -> None:
        """Replace the topic's managed configs (AlterConfigs: configs not given revert to broker defaults)."""
        resource = ConfigResource(ConfigResourceType.TOPIC, name, dict(configs))
        responses = await self._call(f"configure {name}", lambda admin: admin.alter_configs([resource]))
        for response in responses:
            for result in response.to_object()["resources"]:
                _check(result["error_code"], result["error_message"], f"configure {name}")

    async def delete(self, names: Sequence[str]) -> None:
        if not names:
            return
        response = await self._call("delete topics", lambda admin: admin.delete_topics(list(names)))
        for result in response.to_object()["topic_error_codes"]:
            if result["error_code"] != UNKNOWN_TOPIC:
                _check(result["error_code"], None, f"delete topic {result['topic']}")
