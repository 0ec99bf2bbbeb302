"""SPIRE Server registration entries through the server API (gRPC over the admin unix socket).

The stubs are generated at build time from the spire-api-sdk module (``make proto``) into
``payplane_operator._gen``; the admin socket needs no credentials (SPIRE trusts local callers), so in a
cluster the operator runs beside the server or reaches it through a socket shared with it.
"""

from collections.abc import Sequence
from typing import Any, Final

import grpc

from payplane_contracts.identity import SpiffeId
from payplane_operator._gen.spire.api.server.entry.v1 import entry_pb2, entry_pb2_grpc
from payplane_operator._gen.spire.api.types import entry_pb2 as entry_types
from payplane_operator._gen.spire.api.types import selector_pb2, spiffeid_pb2
from payplane_operator.clients.errors import SpireApiError
from payplane_operator.resources import EntrySpec, Selector
from payplane_operator.settings import SpireConfig

_RETRIABLE: Final = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)
OK: Final = 0
NOT_FOUND: Final = grpc.StatusCode.NOT_FOUND.value[0]
ALREADY_EXISTS: Final = grpc.StatusCode.ALREADY_EXISTS.value[0]


def _spiffe_id(text: str) -> Any:
    parsed = SpiffeId.parse(text)
    return spiffeid_pb2.SPIFFEID(trust_domain=parsed.trust_domain, path=parsed.path)


def _id_text(proto: Any) -> str:
    return f"spiffe://{proto.trust_domain}{proto.path}"


def to_proto(entry: EntrySpec) -> Any:
    return entry_types.Entry(
        id=entry.entry_id,
        spiffe_id=_spiffe_id(entry.spiffe_id),
        parent_id=_spiffe_id(entry.parent_id),
        selectors=[selector_pb2.Selector(type=s.type, value=s.value) for s in entry.selectors],
        dns_names=list(entry.dns_names),
        x509_svid_ttl=entry.x509_svid_ttl_s,
        hint=entry.hint,
    )


def from_proto(proto: Any) -> EntrySpec:
    return EntrySpec(
        entry_id=proto.id,
        spiffe_id=_id_text(proto.spiffe_id),
        parent_id=_id_text(proto.parent_id),
        selectors=tuple(sorted(Selector(s.type, s.value) for s in proto.selectors)),
        dns_names=tuple(proto.dns_names),
        x509_svid_ttl_s=proto.x509_svid_ttl,
        hint=proto.hint,
    )


def _status_error(what: str, status: Any) -> SpireApiError:
    code = grpc.StatusCode.UNKNOWN
    for candidate in grpc.StatusCode:
        if candidate.value[0] == status.code:
            code = candidate
    return SpireApiError(f"{what}: {code.name} {status.message}", retriable=code in _RETRIABLE, code=code.name)


class SpireEntries:
    """The Entry service of one SPIRE server. Create with ``SpireEntries(config)``; ``await close()``."""

    def __init__(self, config: SpireConfig) -> None:
        self._config = config
        self._channel = grpc.aio.insecure_channel(f"unix://{config.server_socket}")
        self._stub = entry_pb2_grpc.EntryStub(self._channel)

    async def close(self) -> None:
        await self._channel.close(None)

    async def _rpc(self, what: str, method: Any, request: Any) -> Any:
        try:
            return await method(request, timeout=self._config.request_timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise SpireApiError(
                f"{what}: {exc.code().name} {exc.details()}", retriable=exc.code() in _RETRIABLE, code=exc.code().name
            ) from exc

    async def get(self, entry_id: str) -> EntrySpec | None:
        try:
            proto = await self._stub.GetEntry(
                entry_pb2.GetEntryRequest(id=entry_id), timeout=self._config.request_timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.NOT_FOUND:
                return None
            raise SpireApiError(
                f"get entry {entry_id}: {exc.code().name} {exc.details()}",
                retriable=exc.code() in _RETRIABLE,
                code=exc.code().name,
            ) from exc
        return from_proto(proto)

    async def create(self, entries: Sequence[EntrySpec]) -> list[str]:
        """Create entries with their own IDs; returns the IDs created now (existing ones are skipped)."""
        if not entries:
            return []
        request = entry_pb2.BatchCreateEntryRequest(entries=[to_proto(e) for e in entries])
        response = await self._rpc("create entries", self._stub.BatchCreateEntry, request)
        created = []
        for entry, result in zip(entries, response.results, strict=True):
            if result.status.code == ALREADY_EXISTS and result.entry.id == entry.entry_id:
                continue
            if result.status.code != OK:
                raise _status_error(f"create entry {entry.entry_id} ({entry.spiffe_id})", result.status)
            created.append(entry.entry_id)
        return created

    async def update(self, entries: Sequence[EntrySpec]) -> None:
        """Overwrite the entries (matched by ID) with the given fields."""
        if not entries:
            return
        mask = entry_types.EntryMask(
            spiffe_id=True, parent_id=True, selectors=True, dns_names=True, x509_svid_ttl=True, hint=True
        )
        request = entry_pb2.BatchUpdateEntryRequest(entries=[to_proto(e) for e in entries], input_mask=mask)
        response = await self._rpc("update entries", self._stub.BatchUpdateEntry, request)
        for entry, result in zip(entries, response.results, strict=True):
            if result.status.code != OK:
                raise _status_error(f"update entry {entry.entry_id}", result.status)

    async def delete(self, entry_ids: Sequence[str]) -> list[str]:
        """Delete entries by ID; returns those deleted now (missing ones are not an error)."""
        if not entry_ids:
            return []
        response = await self._rpc(
            "delete entries", self._stub.BatchDeleteEntry, entry_pb2.BatchDeleteEntryRequest(ids=list(entry_ids))
        )
        deleted = []
        for result in response.results:
            if result.status.code == NOT_FOUND:
                continue
            if result.status.code != OK:
                raise _status_error(f"delete entry {result.id}", result.status)
            deleted.append(result.id)
        return deleted
