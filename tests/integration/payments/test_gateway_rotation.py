"""Traffic through the gateway keeps flowing while the gateway's and the worker's SVIDs rotate.

The rail's SPIRE entries get a short X.509 SVID TTL, so both identities rotate every few seconds.
Clients pay and read through the REST gateway without pause; the test watches the worker's served
certificate (a TLS handshake with its port) and the gateway identity's SVID (a process with the
gateway's gid asks the agent, which hands every process of an entry the same SVID), and requires at
least two rotations of each with no failed request.
"""

import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import aiohttp
import pytest
from cryptography import x509

from payplane.devinfra.local_identity import spawn_identity
from tests.integration.conftest import Infra
from tests.integration.payments.fault_checks import PayingClient, assert_exactly_once_and_settled, new_key
from tests.integration.payments.rail_stack import Procs, rail_stack
from tests.integration.test_spire import Spire

SVID_TTL_S = 30  # rotation at about half the lifetime (SPIRE backdates NotBefore by 10 s)
ROTATIONS = 2
DEADLINE_S = 110.0

SERIAL_WATCH = """
import json, sys, time
from payplane.adapters.svid import SvidSource
from cryptography import x509
seen = []
with SvidSource(first_svid_timeout_s=40) as source:
    deadline = time.monotonic() + float(sys.argv[1])
    while time.monotonic() < deadline:
        chain = source.material().cert_chain_pem
        serial = x509.load_pem_x509_certificate(chain).serial_number
        if not seen or seen[-1] != serial:
            seen.append(serial)
            print(json.dumps(serial), flush=True)
        time.sleep(0.2)
"""


@pytest.fixture
def rotation_procs() -> Iterator[Procs]:
    procs = Procs()
    yield procs
    procs.stop_all()


def _served_serial(port: int) -> int:
    """The serial of the certificate the worker serves (the handshake needs no client certificate to
    show it; the server refuses the connection right after)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


def _watch_serials(spire: Spire, gid: int) -> subprocess.Popen[str]:
    """A process with this gid that prints the serial of each SVID the agent gives it."""
    return subprocess.Popen(
        [sys.executable, "-c", SERIAL_WATCH, str(DEADLINE_S)],
        env={**os.environ, "SPIFFE_ENDPOINT_SOCKET": spire.endpoint_socket},
        stdout=subprocess.PIPE,
        text=True,
        **spawn_identity(gid),
    )


def _collect_serials(watch: subprocess.Popen[str], serials: list[int]) -> None:
    """Append each serial the watch prints, as it prints it (runs in a thread until the watch ends)."""
    assert watch.stdout is not None
    for line in watch.stdout:
        if line.strip():
            serials.append(int(json.loads(line)))


async def test_gateway_to_worker_traffic_survives_svid_rotations(
    infra: Infra, spire: Spire, rotation_procs: Procs
) -> None:
    async with (
        rail_stack(
            spire=spire,
            procs=rotation_procs,
            postgres_dsn=infra["PAYPLANE_POSTGRES_DSN"],
            bootstrap=infra["KAFKA_BOOTSTRAP"],
            redis_url=infra["PAYPLANE_REDIS_URL"],
            svid_ttl_s=SVID_TTL_S,
            prefix="rot",
        ) as stack,
        aiohttp.ClientSession() as http,
    ):
        stack.spawn_writer()
        _, worker_port = await asyncio.to_thread(stack.spawn_worker)
        _, gateway_port = await asyncio.to_thread(stack.spawn_gateway, worker_port)
        watch = _watch_serials(spire, stack.gateway.gid)
        gateway_serials: list[int] = []
        reader = threading.Thread(target=_collect_serials, args=(watch, gateway_serials), daemon=True)
        reader.start()
        try:
            payer = PayingClient(http, stack.clients[0], f"http://127.0.0.1:{gateway_port}")
            source, wallet = await payer.open_accounts(stack.ledger_dsn)
            worker_serials: list[int] = []
            tried: set[str] = set()
            deadline = time.monotonic() + DEADLINE_S
            while min(len(worker_serials), len(gateway_serials)) <= ROTATIONS and time.monotonic() < deadline:
                serial = await asyncio.to_thread(_served_serial, worker_port)
                if not worker_serials or worker_serials[-1] != serial:
                    worker_serials.append(serial)
                keys = [new_key() for _ in range(4)]
                tried.update(keys)
                body = {"amount": 5, "currency": "EUR", "source": source, "destination": wallet}
                for status, answer in await asyncio.gather(
                    *(payer.post("/v1/payments", {**body, "description": k}, k) for k in keys)
                ):
                    assert status == 200, f"a request failed across rotation: {status} {answer}"
                    payer.accepted[answer["description"]] = answer["id"]
                await asyncio.sleep(0.1)
            assert len(worker_serials) > ROTATIONS, f"the worker's SVID rotated too few times: {worker_serials}"
            # the gateway's identity rotated as often while the traffic above went through it
        finally:
            watch.terminate()
            await asyncio.to_thread(reader.join, 10)
            watch.wait()
        assert len(gateway_serials) > ROTATIONS, f"the gateway's SVID rotated too few times: {gateway_serials}"
        assert set(payer.answers) == {200}, payer.answers
        await assert_exactly_once_and_settled(stack.payments_dsn, stack.ledger_dsn, payer.accepted, tried, wallet)
