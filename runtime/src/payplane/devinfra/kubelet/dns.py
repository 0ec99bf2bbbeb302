"""The Service resolver: ``<service>.<namespace>.svc[.cluster.local]`` → the Service's ready endpoints.

A cluster has DNS and kube-proxy; this machine has neither, so the kubelet answers A queries for
Service names itself, from the EndpointSlices the real EndpointSlice controller publishes. Every
Service name resolves to its ready pod addresses (there is no virtual ClusterIP to route through).
Pods reach it through gRPC targets ``dns://<host:port>/<name>:<port>`` (see ``podspec.point_grpc_dns``).
A UDP server on 127.0.0.1; other names get NXDOMAIN, other record types an empty answer.
"""

import ipaddress
import socketserver
import struct
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

CLUSTER_DOMAIN: Final = "cluster.local"
TTL_S: Final = 1
TYPE_A: Final = 1
CLASS_IN: Final = 1
RCODE_FORMAT_ERROR: Final = 1
RCODE_NXDOMAIN: Final = 3
_HEADER: Final = struct.Struct("!HHHHHH")
SERVICE_NAME_LABEL: Final = "kubernetes.io/service-name"


class MalformedQueryError(ValueError):
    pass


def service_names(service: str, namespace: str) -> list[str]:
    short = f"{service}.{namespace}.svc"
    return [short, f"{short}.{CLUSTER_DOMAIN}"]


def records_from_slices(slices: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Name → ready IPv4 addresses, from EndpointSlices (an endpoint without a ready condition is ready)."""
    table: dict[str, set[str]] = {}
    for item in slices:
        meta = item.get("metadata", {})
        service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if not service or item.get("addressType") != "IPv4":
            continue
        addresses = table.setdefault(f"{service}.{meta.get('namespace', '')}.svc", set())
        for endpoint in item.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            addresses.update(endpoint.get("addresses") or [])
    records: dict[str, list[str]] = {}
    for short, addresses in table.items():
        for name in (short, f"{short}.{CLUSTER_DOMAIN}"):
            records[name] = sorted(addresses, key=ipaddress.IPv4Address)
    return records


def parse_query(packet: bytes) -> tuple[int, int, str, int, int]:
    """(id, flags, name, qtype, end of the question) of a one-question query."""
    if len(packet) < _HEADER.size:
        raise MalformedQueryError("short header")
    query_id, flags, questions, _, _, _ = _HEADER.unpack_from(packet)
    if questions != 1:
        raise MalformedQueryError("exactly one question expected")
    labels, offset = [], _HEADER.size
    while True:
        if offset >= len(packet):
            raise MalformedQueryError("name runs past the packet")
        length = packet[offset]
        offset += 1
        if length == 0:
            break
        if length > 63:
            raise MalformedQueryError("compressed or oversized label in a question")
        labels.append(packet[offset : offset + length].decode("ascii", "replace"))
        offset += length
    if offset + 4 > len(packet):
        raise MalformedQueryError("question has no type and class")
    qtype, _qclass = struct.unpack_from("!HH", packet, offset)
    return query_id, flags, ".".join(labels).lower(), qtype, offset + 4


def answer(packet: bytes, records: Mapping[str, Sequence[str]]) -> bytes:
    """The response to one query packet."""
    try:
        query_id, flags, name, qtype, question_end = parse_query(packet)
    except MalformedQueryError:
        query_id = struct.unpack_from("!H", packet)[0] if len(packet) >= 2 else 0
        return _HEADER.pack(query_id, 0x8000 | RCODE_FORMAT_ERROR, 0, 0, 0, 0)
    question = packet[_HEADER.size : question_end]
    recursion_desired = flags & 0x0100
    addresses = records.get(name.rstrip("."))
    if addresses is None:
        return _HEADER.pack(query_id, 0x8400 | recursion_desired | RCODE_NXDOMAIN, 1, 0, 0, 0) + question
    chosen = list(addresses) if qtype == TYPE_A else []
    body = b"".join(
        struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, TTL_S, 4) + ipaddress.IPv4Address(ip).packed for ip in chosen
    )
    return _HEADER.pack(query_id, 0x8400 | recursion_desired, 1, len(chosen), 0, 0) + question + body


class ServiceResolver:
    """A UDP DNS server in a daemon thread; ``update`` swaps the records atomically."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._records: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        resolver = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                sock.sendto(answer(data, resolver.records()), self.client_address)

        self._server = socketserver.ThreadingUDPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="service-resolver", daemon=True)

    @property
    def authority(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def records(self) -> dict[str, list[str]]:
        with self._lock:
            return self._records

    def update(self, records: dict[str, list[str]]) -> None:
        with self._lock:
            self._records = records

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
