"""This workload's X.509 SVID from the SPIRE agent's Workload API, as PEM material that rotates.

py-spiffe's ``X509Source`` keeps a stream open to the agent and replaces the SVID when the agent
rotates it (at about half its lifetime). grpcio, like most TLS consumers, wants PEM bytes, so this
adapter converts each update once and hands out immutable ``SvidMaterial`` snapshots; consumers
that must react to a rotation (server credentials, client channels) subscribe to updates or compare
``generation``.
"""

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from spiffe import X509Source
from spiffe.workloadapi.x509_context import X509Context

FIRST_SVID_TIMEOUT_S = 30.0

SvidListener = Callable[["SvidMaterial"], None]


@dataclass(frozen=True)
class SvidMaterial:
    """One coherent snapshot: key, chain and the trust bundle of this workload's trust domain."""

    spiffe_id: str
    private_key_pem: bytes
    cert_chain_pem: bytes
    trust_bundle_pem: bytes
    serial_number: int
    not_after: datetime
    generation: int  # increases with every update from the agent (SVID or bundle)


def _pem(certificates: list[x509.Certificate]) -> bytes:
    return b"".join(cert.public_bytes(Encoding.PEM) for cert in certificates)


def _material_from(context: X509Context, generation: int) -> SvidMaterial:
    svid = context.default_svid
    bundle = context.x509_bundle_set.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
    if bundle is None:
        raise ValueError(f"the Workload API sent no bundle for {svid.spiffe_id.trust_domain}")
    authorities = sorted(bundle.x509_authorities, key=lambda cert: cert.serial_number)
    return SvidMaterial(
        spiffe_id=str(svid.spiffe_id),
        private_key_pem=svid.private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()),
        cert_chain_pem=_pem(svid.cert_chain),
        trust_bundle_pem=_pem(authorities),
        serial_number=svid.leaf.serial_number,
        not_after=svid.leaf.not_valid_after_utc,
        generation=generation,
    )


class SvidSource:
    """Owns an ``X509Source``; ``material()`` is a cheap read of the latest converted snapshot.

    Listeners run on py-spiffe's watcher thread: they must be quick and thread-safe (an asyncio
    consumer should hop onto its loop with ``loop.call_soon_threadsafe``).
    """

    def __init__(self, endpoint_socket: str | None = None, first_svid_timeout_s: float = FIRST_SVID_TIMEOUT_S) -> None:
        """``endpoint_socket`` like ``unix:///path``; default: the SPIFFE_ENDPOINT_SOCKET variable."""
        self._lock = threading.Lock()
        self._listeners: list[SvidListener] = []
        self._generation = 0
        self._source = X509Source(socket_path=endpoint_socket, timeout_in_seconds=first_svid_timeout_s)
        self._material = self._convert()
        self._source.subscribe_for_updates(self._on_update)
        self._on_update()  # an update that arrived before the subscription is not lost

    def material(self) -> SvidMaterial:
        with self._lock:
            return self._material

    def subscribe(self, listener: SvidListener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: SvidListener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def close(self) -> None:
        self._source.close()

    def __enter__(self) -> "SvidSource":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _convert(self) -> SvidMaterial:
        with self._lock:
            self._generation += 1
            generation = self._generation
        return _material_from(self._source.get_x509_context(), generation)

    def _on_update(self) -> None:
        material = self._convert()
        with self._lock:
            if material.generation < self._material.generation:
                return  # a slower conversion of an older update lost the race
            self._material = material
            listeners = list(self._listeners)
        for listener in listeners:
            listener(material)
