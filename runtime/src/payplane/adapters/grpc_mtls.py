"""SPIFFE mTLS for gRPC: rotating server credentials, caller authorization, rotating client channels.

Facts about grpcio this module is built on (checked against grpcio 1.85.1 and SPIRE 1.15.3):

- A server with ``require_client_authentication=True`` refuses plaintext and certificate-less
  clients during the handshake; a handler never sees them.
- ``context.auth_context()`` carries ``peer_spiffe_id`` (the client certificate's SPIFFE URI SAN).
  A ``grpc.aio.ServerInterceptor`` sees no auth context, so authorization happens in the handler,
  through ``CallerAllowList.authorize`` or the ``@allow_callers`` decorator.
- The client checks the server's DNS/IP SANs against the dialed host, and grpcio has no hook to
  check the server's SPIFFE ID instead. Server workloads are therefore registered with
  ``dns_names=["localhost"]`` and clients dial ``localhost:<port>``; trust comes from the SPIFFE
  bundle (roots), so only an SVID of this trust domain can answer.
- Server credentials come from ``grpc.dynamic_ssl_server_credentials``: grpc asks a fetcher for the
  certificate before each new handshake, so a rotated SVID is served without restarting or dropping
  existing connections. Channel credentials are fixed at creation, so ``RotatingChannel`` builds a
  new channel after a rotation and closes the old one once its in-flight calls had time to finish.
"""

import asyncio
import functools
import threading
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Final, TypeVar, cast

import grpc
import grpc.aio

from payplane.adapters.svid import SvidMaterial, SvidSource

PEER_SPIFFE_ID_KEY: Final = "peer_spiffe_id"
OLD_CHANNEL_GRACE_S: Final = 30.0

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")
ServicerT = TypeVar("ServicerT")
Handler = Callable[[ServicerT, RequestT, grpc.aio.ServicerContext[RequestT, ResponseT]], Awaitable[ResponseT]]


# --- server side ----------------------------------------------------------------------------------


def _certificate_configuration(material: SvidMaterial) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(material.private_key_pem, material.cert_chain_pem)], root_certificates=material.trust_bundle_pem
    )


def server_credentials(source: SvidSource) -> grpc.ServerCredentials:
    """mTLS server credentials that always serve the newest SVID and trust the newest bundle."""
    served_generation = source.material().generation
    lock = threading.Lock()

    def fetch_newer_configuration() -> grpc.ServerCertificateConfiguration | None:
        nonlocal served_generation
        material = source.material()
        with lock:
            if material.generation == served_generation:
                return None  # keep serving the current certificate
            served_generation = material.generation
        return _certificate_configuration(material)

    # grpc documents None as "no change"; grpc-stubs' signature forgets the None
    fetcher = cast(Callable[[], grpc.ServerCertificateConfiguration], fetch_newer_configuration)
    return grpc.dynamic_ssl_server_credentials(
        _certificate_configuration(source.material()),
        fetcher,
        require_client_authentication=True,
    )


def peer_spiffe_id(context: grpc.aio.ServicerContext[RequestT, ResponseT]) -> str | None:
    """The caller's SPIFFE ID as its certificate states it, or None (no mTLS, no URI SAN)."""
    first_value = next(iter(context.auth_context().get(PEER_SPIFFE_ID_KEY, ())), None)
    return first_value.decode() if first_value is not None else None


class CallerAllowList:
    """The SPIFFE IDs allowed to call one server; everyone else gets PERMISSION_DENIED."""

    def __init__(self, allowed_ids: Collection[str]) -> None:
        self.allowed_ids = frozenset(allowed_ids)

    async def authorize(self, context: grpc.aio.ServicerContext[RequestT, ResponseT]) -> str:
        """Return the caller's SPIFFE ID, or abort the call with PERMISSION_DENIED."""
        caller = peer_spiffe_id(context)
        if caller is None or caller not in self.allowed_ids:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"caller {caller or '(no SPIFFE ID)'} is not allowed to call this service",
            )
        assert caller is not None  # abort() raised otherwise
        return caller


def allow_callers(
    allow_list: CallerAllowList,
) -> Callable[[Handler[ServicerT, RequestT, ResponseT]], Handler[ServicerT, RequestT, ResponseT]]:
    """Decorate a servicer's unary handler so it only runs for allowed callers."""

    def decorate(handler: Handler[ServicerT, RequestT, ResponseT]) -> Handler[ServicerT, RequestT, ResponseT]:
        @functools.wraps(handler)
        async def guarded(
            self: ServicerT, request: RequestT, context: grpc.aio.ServicerContext[RequestT, ResponseT]
        ) -> ResponseT:
            await allow_list.authorize(context)
            return await handler(self, request, context)

        return guarded

    return decorate


# --- client side ----------------------------------------------------------------------------------


def channel_credentials(material: SvidMaterial) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=material.trust_bundle_pem,
        private_key=material.private_key_pem,
        certificate_chain=material.cert_chain_pem,
    )


class RotatingChannel:
    """A ``grpc.aio`` channel to one target that is rebuilt after each SVID rotation.

    Call ``channel()`` for every RPC (or stub creation): it is a cheap generation check until the
    SVID changes, then it returns a fresh channel and closes the old one after ``old_channel_grace_s``
    so calls still running on it finish. Must be used from the event loop that runs the calls.
    """

    def __init__(
        self,
        source: SvidSource,
        target: str,
        options: Sequence[tuple[str, str | int]] = (),
        old_channel_grace_s: float = OLD_CHANNEL_GRACE_S,
    ) -> None:
        """``target`` like ``localhost:<port>``: the host must match a DNS SAN of the server's SVID."""
        self._source = source
        self._target = target
        self._options = list(options)
        self._grace_s = old_channel_grace_s
        self._generation = -1
        self._channel: grpc.aio.Channel | None = None
        self._retiring: set[asyncio.Task[None]] = set()

    @property
    def generation(self) -> int:
        """The SVID generation the current channel was built with."""
        return self._generation

    def channel(self) -> grpc.aio.Channel:
        material = self._source.material()
        if self._channel is None or material.generation != self._generation:
            if self._channel is not None:
                self._retire(self._channel)
            self._channel = grpc.aio.secure_channel(self._target, channel_credentials(material), self._options)
            self._generation = material.generation
        return self._channel

    def _retire(self, old: grpc.aio.Channel) -> None:
        task = asyncio.get_running_loop().create_task(old.close(grace=self._grace_s))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        """Close the current channel now and wait for retiring ones."""
        if self._channel is not None:
            await self._channel.close(grace=None)
            self._channel = None
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
