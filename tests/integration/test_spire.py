"""SPIRE for real: entries, SVIDs over the Workload API, mTLS gRPC between processes, rotation.

Every workload here is a separate process with its own SVID: it runs as root with a primary gid of
its own and its entry selects ``unix:gid:<gid>`` (see ``payplane.devinfra.local_identity``). Entries
live in a namespace unique to this run and are deleted afterwards.
"""

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from payplane.devinfra.local_identity import ensure_distinct, gid_selector, local_gid, spawn_identity
from payplane.devinfra.spire_cli import RegistrationEntry, SpireCliError, SpireServerCli
from payplane_contracts.identity import WorkloadRole, parse_workload_id, workload_spiffe_id
from tests.processes import listening_port, stop_processes

PEERS_DIR = Path(__file__).parent / "spire_peers"
TEST_NAMESPACE_PREFIX = "it-"
LEFTOVER_AGE_S = 3600.0
FIRST_SVID_TIMEOUT_S = 40.0
PROCESS_TIMEOUT_S = 90.0
LISTEN_TIMEOUT_S = 60.0
ROTATION_TTL_S = 30  # rotation happens at about half the lifetime (SPIRE backdates NotBefore 10 s)
ROTATIONS = 2  # twice, so the client also reconnects to a server that has already rotated
ROTATION_DEADLINE_S = 100.0
REQUIRED_ENDPOINTS = (
    "SPIFFE_ENDPOINT_SOCKET",
    "PAYPLANE_SPIRE_SERVER_SOCKET",
    "PAYPLANE_SPIRE_TRUST_DOMAIN",
    "PAYPLANE_SPIRE_NODE_ID",
    "PAYPLANE_SPIRE_SERVER_BIN",
)


@dataclass(frozen=True)
class Spire:
    cli: SpireServerCli
    trust_domain: str
    node_id: str
    endpoint_socket: str


@dataclass(frozen=True)
class Workload:
    spiffe_id: str
    gid: int


@dataclass
class Registrar:
    """Registers local workloads under one throwaway namespace and deletes their entries afterwards."""

    spire: Spire
    namespace: str = field(default_factory=lambda: _test_namespace(time.time()))
    created: list[RegistrationEntry] = field(default_factory=list)

    def register(
        self, role: WorkloadRole, owner: str, *, dns_names: Sequence[str] = (), x509_svid_ttl_s: int | None = None
    ) -> Workload:
        spiffe_id = str(workload_spiffe_id(self.spire.trust_domain, role, self.namespace, owner))
        ensure_distinct([entry.spiffe_id for entry in self.created] + [spiffe_id])
        gid = local_gid(spiffe_id)
        self.created.append(
            self.spire.cli.create_entry(
                spiffe_id=spiffe_id,
                parent_id=self.spire.node_id,
                selectors=[gid_selector(gid)],
                dns_names=dns_names,
                x509_svid_ttl_s=x509_svid_ttl_s,
            )
        )
        return Workload(spiffe_id, gid)

    def delete_all(self) -> None:
        for entry in self.created:
            _delete_if_present(self.spire, entry.entry_id)
        self.created.clear()


def _test_namespace(now_s: float) -> str:
    """``it-<minutes since the epoch, hex>-<random>``: the time lets cleanup tell leftovers from live runs."""
    return f"{TEST_NAMESPACE_PREFIX}{int(now_s // 60):x}-{uuid.uuid4().hex[:8]}"


def _is_leftover(spiffe_id: str, now_s: float) -> bool:
    """A test entry older than LEFTOVER_AGE_S (or from before namespaces carried their time). Several
    test runs share the SPIRE server, so a young entry may belong to a run still going: never touch it."""
    _, found, rest = spiffe_id.partition(f"/ns/{TEST_NAMESPACE_PREFIX}")
    if not found:
        return False
    minutes, dash, _ = rest.partition("/")[0].partition("-")
    try:
        created_s = int(minutes, 16) * 60 if dash else 0.0
    except ValueError:
        created_s = 0.0
    return now_s - created_s > LEFTOVER_AGE_S


def _delete_if_present(spire: Spire, entry_id: str) -> None:
    try:
        spire.cli.delete_entry(entry_id)
    except SpireCliError as exc:
        if "NotFound" not in str(exc):
            raise


def _delete_leftover_test_entries(spire: Spire) -> None:
    """Entries an interrupted earlier run could not delete (see ``_is_leftover``)."""
    now_s = time.time()
    for entry in spire.cli.entries():
        if entry.parent_id == spire.node_id and _is_leftover(entry.spiffe_id, now_s):
            _delete_if_present(spire, entry.entry_id)


@dataclass
class Processes:
    """Workload processes spawned with an identity; all are killed at teardown."""

    spire: Spire
    running: list[subprocess.Popen[str]] = field(default_factory=list)

    def spawn(self, workload: Workload, argv: Sequence[str]) -> subprocess.Popen[str]:
        env = {**os.environ, "SPIFFE_ENDPOINT_SOCKET": self.spire.endpoint_socket}
        proc = subprocess.Popen(
            [sys.executable, *argv],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            **spawn_identity(workload.gid),
        )
        self.running.append(proc)
        return proc

    def run(self, workload: Workload, argv: Sequence[str], timeout_s: float = PROCESS_TIMEOUT_S) -> str:
        proc = self.spawn(workload, argv)
        try:
            stdout, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            pytest.fail(f"{argv} did not finish within {timeout_s:.0f} s; stderr:\n{stderr[-3000:]}")
        assert proc.returncode == 0, f"{argv} exited {proc.returncode}; stderr:\n{stderr[-3000:]}"
        return stdout

    def stop_all(self) -> None:
        stop_processes(self.running, grace_s=10)


def _listening_port(proc: subprocess.Popen[str], timeout_s: float = LISTEN_TIMEOUT_S) -> int:
    """Wait, bounded, for the server peer's ``LISTENING <port>`` line."""
    return listening_port(proc, "server peer", timeout_s)


def _client_summary(
    processes: Processes, workload: Workload, port: int, *flags: str, timeout_s: float = PROCESS_TIMEOUT_S
) -> dict[str, Any]:
    stdout = processes.run(
        workload, [str(PEERS_DIR / "whoami_client.py"), "--target", f"localhost:{port}", *flags], timeout_s
    )
    summary: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return summary


@pytest.fixture(scope="module")
def spire(infra: Any) -> Spire:
    missing = [key for key in REQUIRED_ENDPOINTS if key not in infra.endpoints]
    if missing:
        pytest.fail(f"the spire component wrote no {', '.join(missing)}: is it in payplane infra's stack?")
    spire = Spire(
        cli=SpireServerCli(Path(infra["PAYPLANE_SPIRE_SERVER_BIN"]), Path(infra["PAYPLANE_SPIRE_SERVER_SOCKET"])),
        trust_domain=infra["PAYPLANE_SPIRE_TRUST_DOMAIN"],
        node_id=infra["PAYPLANE_SPIRE_NODE_ID"],
        endpoint_socket=infra["SPIFFE_ENDPOINT_SOCKET"],
    )
    assert spire.cli.healthy(), "spire-server does not pass its health check"
    _delete_leftover_test_entries(spire)
    return spire


@pytest.fixture(scope="module")
def registrar(spire: Spire) -> Iterator[Registrar]:
    registrar = Registrar(spire)
    yield registrar
    registrar.delete_all()


@pytest.fixture(scope="module")
def processes(spire: Spire) -> Iterator[Processes]:
    processes = Processes(spire)
    yield processes
    processes.stop_all()


@dataclass(frozen=True)
class WhoAmI:
    port: int
    server: Workload
    allowed_client: Workload
    other_client: Workload


@pytest.fixture(scope="module")
def whoami(registrar: Registrar, processes: Processes) -> WhoAmI:
    """A payment worker that only lets the gateway call it; a ledger writer exists but is not allowed."""
    server = registrar.register(WorkloadRole.PAYMENT_WORKER, "whoami", dns_names=["localhost"])
    allowed = registrar.register(WorkloadRole.GATEWAY, "whoami")
    other = registrar.register(WorkloadRole.LEDGER_WRITER, "whoami")
    proc = processes.spawn(server, [str(PEERS_DIR / "whoami_server.py"), "--allow", allowed.spiffe_id])
    return WhoAmI(_listening_port(proc), server, allowed, other)


FETCH_SVID_SCRIPT = """
import json, sys
from payplane.adapters.svid import SvidSource
from spiffe.workloadapi.errors import X509SourceError
try:
    source = SvidSource(first_svid_timeout_s=float(sys.argv[1]))
except X509SourceError as exc:
    print(json.dumps({"error": str(exc)}))
    raise SystemExit(0)
with source:
    m = source.material()
    print(json.dumps({"spiffe_id": m.spiffe_id, "serial": m.serial_number, "not_after": m.not_after.timestamp(),
                      "chain": m.cert_chain_pem.decode(), "bundle": m.trust_bundle_pem.decode()}))
"""


def _fetch_svid(processes: Processes, workload: Workload, timeout_s: float) -> dict[str, Any]:
    stdout = processes.run(workload, ["-c", FETCH_SVID_SCRIPT, str(timeout_s)])
    answer: dict[str, Any] = json.loads(stdout)
    return answer


def test_registered_process_gets_its_svid_over_the_workload_api(
    spire: Spire, registrar: Registrar, processes: Processes
) -> None:
    workload = registrar.register(WorkloadRole.GATEWAY, "svid")

    answer = _fetch_svid(processes, workload, FIRST_SVID_TIMEOUT_S)

    assert answer.get("spiffe_id") == workload.spiffe_id, answer
    assert parse_workload_id(answer["spiffe_id"], spire.trust_domain).role is WorkloadRole.GATEWAY
    assert answer["not_after"] > time.time()
    assert "BEGIN CERTIFICATE" in answer["chain"]
    assert "BEGIN CERTIFICATE" in answer["bundle"]


def test_process_with_an_unregistered_gid_gets_no_svid(registrar: Registrar, processes: Processes) -> None:
    never_registered_id = f"spiffe://{registrar.spire.trust_domain}/ns/{registrar.namespace}/sa/nobody"
    stranger = Workload(spiffe_id=never_registered_id, gid=local_gid(never_registered_id))

    answer = _fetch_svid(processes, stranger, timeout_s=5.0)

    assert "error" in answer, f"a process nobody registered received an SVID: {answer}"


def test_mtls_call_between_processes_carries_the_callers_spiffe_id(whoami: WhoAmI, processes: Processes) -> None:
    summary = _client_summary(processes, whoami.allowed_client, whoami.port, "--calls", "3")

    assert summary["failures"] == []
    assert summary["calls_ok"] == 3
    assert summary["spiffe_id"] == whoami.allowed_client.spiffe_id
    assert summary["callers"] == [whoami.allowed_client.spiffe_id]


def test_caller_not_on_the_allow_list_is_denied(whoami: WhoAmI, processes: Processes) -> None:
    summary = _client_summary(processes, whoami.other_client, whoami.port, "--calls", "1")

    assert summary["calls_ok"] == 0
    assert [failure["code"] for failure in summary["failures"]] == ["PERMISSION_DENIED"]
    assert whoami.other_client.spiffe_id in summary["failures"][0]["details"]


async def _call_status(channel: grpc.aio.Channel) -> grpc.StatusCode:
    async with channel:
        try:
            await channel.unary_unary("/payplane.test.WhoAmI/Call", None, None)(b"", timeout=10.0)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def test_plaintext_and_certificateless_callers_are_refused(spire: Spire, whoami: WhoAmI) -> None:
    target = f"localhost:{whoami.port}"
    roots_only = grpc.ssl_channel_credentials(root_certificates=spire.cli.bundle_pem().encode())

    plaintext = await _call_status(grpc.aio.insecure_channel(target))
    without_certificate = await _call_status(grpc.aio.secure_channel(target, roots_only))

    assert plaintext is grpc.StatusCode.UNAVAILABLE
    assert without_certificate is grpc.StatusCode.UNAVAILABLE


def test_server_svid_without_a_dns_name_fails_client_hostname_check(registrar: Registrar, processes: Processes) -> None:
    """grpcio checks the dialed host against DNS SANs only: server entries need dns_names=["localhost"]."""
    server = registrar.register(WorkloadRole.PAYMENT_WORKER, "no-dns")
    client = registrar.register(WorkloadRole.GATEWAY, "no-dns")
    port = _listening_port(processes.spawn(server, [str(PEERS_DIR / "whoami_server.py"), "--allow", client.spiffe_id]))

    summary = _client_summary(processes, client, port, "--calls", "1")

    assert [failure["code"] for failure in summary["failures"]] == ["UNAVAILABLE"]
    assert "Hostname Verification" in summary["failures"][0]["details"]


def test_calls_keep_working_across_svid_rotation(registrar: Registrar, processes: Processes) -> None:
    server = registrar.register(
        WorkloadRole.LEDGER_WRITER, "rotation", dns_names=["localhost"], x509_svid_ttl_s=ROTATION_TTL_S
    )
    client = registrar.register(WorkloadRole.PAYMENT_WORKER, "rotation", x509_svid_ttl_s=ROTATION_TTL_S)
    port = _listening_port(processes.spawn(server, [str(PEERS_DIR / "whoami_server.py"), "--allow", client.spiffe_id]))

    summary = _client_summary(
        processes,
        client,
        port,
        "--until-rotations",
        str(ROTATIONS),
        "--max-duration-s",
        str(ROTATION_DEADLINE_S),
        timeout_s=ROTATION_DEADLINE_S + 30,
    )

    assert summary["failures"] == [], f"calls failed across rotation: {summary['failures'][:5]}"
    rotations_s = f"{ROTATIONS} rotations within {ROTATION_DEADLINE_S:.0f} s"
    assert len(summary["caller_serials"]) > ROTATIONS, f"client SVID: fewer than {rotations_s}: {summary}"
    assert len(summary["server_serials"]) > ROTATIONS, f"server SVID: fewer than {rotations_s}: {summary}"
    assert len(summary["channel_generations"]) > ROTATIONS, f"the client did not rebuild its channel: {summary}"
    assert summary["calls_ok"] > 10
