"""What ``make run`` does, through the same code (``payplane.devinfra.up.bring_up`` and the demo load),
in a fresh namespace with its own rail name and its own process-kubelet Node: the example rail becomes
Ready with its pods running as local processes (own addresses, own SPIFFE gids), payments created
through the gateway settle in the ledger, ``payplane ledger verify`` passes, and deleting the rail
stops its processes. Everything the test made is removed afterwards (topics with the rail).
"""

import asyncio
import ipaddress
import json
import os
import signal
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from payplane.devinfra.demo_load import DemoLoad
from payplane.devinfra.kubelet.podspec import pod_gid
from payplane.devinfra.settings import InfraSettings
from payplane.devinfra.up import (
    Platform,
    UpOptions,
    payplane_command,
)
from tests.e2e.conftest import running_platform

PAYMENTS = 20
RATE_PER_S = 10.0
GONE_TIMEOUT_S = 120.0
BALANCE_TIMEOUT_S = 30.0
POD_CIDR = ipaddress.IPv4Network("198.18.0.0/16")
# bring-up (up to 240 s on a loaded machine) + payments + deletion
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def platform(settings: InfraSettings) -> Iterator[Platform]:
    run_id = uuid.uuid4().hex[:6]
    options = UpOptions(
        namespace=f"e2e-{run_id}",
        rail_name=f"e2e-{run_id}",
        node_name=f"e2e-{run_id}",
        topics_deletion_policy="Delete",
    )
    with running_platform(settings, options) as platform:
        yield platform


def _pid(container_status: dict[str, Any]) -> int:
    return int(container_status["containerID"].removeprefix("process://"))


def _effective_gid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Gid:"):
            return int(line.split()[2])
    raise AssertionError(f"no Gid line for pid {pid}")


def _wait_all_ready(platform: Platform, what: str, timeout_s: float = GONE_TIMEOUT_S) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    pods: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        pods = platform.pods()
        ready = [
            p
            for p in pods
            if not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])
        ]
        if pods and len(ready) == len(pods):
            return pods
        time.sleep(1.0)
    pytest.fail(f"{what}: pods not all Ready within {timeout_s:.0f} s: {[p['metadata']['name'] for p in pods]}")


def _run_payments(platform: Platform, count: int) -> DemoLoad:
    urls = platform.gateway_urls()
    load = DemoLoad(lambda: urls, platform.api_key, platform.currency)
    asyncio.run(load.run(asyncio.Event(), RATE_PER_S, count_max=count))
    return load


def test_the_rail_is_ready_with_every_pod_running_as_a_local_process(platform: Platform) -> None:
    # the HPAs (minReplicas 2) may add pods after the rail first became Ready: wait for those to run too
    pods = _wait_all_ready(platform, "after bring-up")
    roles = sorted(p["metadata"]["labels"]["app.kubernetes.io/component"] for p in pods)
    assert set(roles) == {"gateway", "payment-worker", "ledger-writer"}, roles
    addresses = set()
    for pod in pods:
        status, name = pod["status"], pod["metadata"]["name"]
        assert status["phase"] == "Running", (name, status)
        assert pod["spec"]["nodeName"] == platform.options.node_name
        ready = {c["type"]: c["status"] for c in status["conditions"]}
        assert ready["Ready"] == "True", (name, status["conditions"])
        assert ipaddress.IPv4Address(status["podIP"]) in POD_CIDR
        addresses.add(status["podIP"])
        containers = {c["name"] for c in status["containerStatuses"]}
        role = pod["metadata"]["labels"]["app.kubernetes.io/component"]
        # a writer pod also runs the shard's outbox relay, a worker pod its settler, as processes of their own
        second = {"ledger-writer": {"ledger-relay"}, "payment-worker": {"payment-settler"}}.get(role, set())
        assert containers == {role, *second}, (name, containers)
        for container in status["containerStatuses"]:
            pid = _pid(container)
            # the process runs as its pod's SPIFFE identity: the gid the operator's local SPIRE entry selects
            assert _effective_gid(pid) == pod_gid(pod, platform.endpoints["PAYPLANE_SPIRE_TRUST_DOMAIN"])
            pod_dir = platform.pods_dir / f"{platform.namespace}_{name}_{pod['metadata']['uid']}"
            assert (pod_dir / f"{container['name']}.log").exists(), (pod_dir, container["name"])
    assert len(addresses) == len(pods), "every pod has an address of its own"
    gateway_ip = next(p["status"]["podIP"] for p in pods if "gateway" in p["metadata"]["name"])
    with urllib.request.urlopen(f"http://{gateway_ip}:9090/metrics", timeout=5) as response:
        assert b"payplane_gateway_requests_total" in response.read()


def test_payments_through_the_gateway_settle_and_the_ledger_verifies(platform: Platform) -> None:
    assert platform.gateway_urls(), "no ready gateway endpoint"
    stats = _run_payments(platform, PAYMENTS).stats
    assert stats.created == PAYMENTS, stats.summary()
    assert dict(stats.final) == {"succeeded": PAYMENTS}, stats.summary()
    assert stats.replays_matching == PAYMENTS // 10, "an idempotent retry returns the same payment"
    assert not stats.rejected, stats.summary()
    verified = payplane_command("ledger", "verify", *[a for dsn in platform.ledger_dsns for a in ("--dsn", dsn)])
    assert "ledger invariants hold" in verified
    # the worker pods' settlers (not the workers) applied the ledger's answers: their metrics count them
    workers = [p for p in platform.pods() if p["metadata"]["labels"]["app.kubernetes.io/component"] == "payment-worker"]
    succeeded = 'payplane_payments_total{status="succeeded"}'
    settled = 0.0
    for pod in workers:
        address = pod["status"].get("podIP")
        if not address:  # a replica the autoscaler is still placing has settled nothing
            continue
        log = platform.pods_dir / f"{platform.namespace}_{pod['metadata']['name']}_{pod['metadata']['uid']}"
        settled += _metric(f"http://{address}:9091/metrics", succeeded, log / "payment-settler.log")
        assert _metric(f"http://{address}:9090/metrics", succeeded, log / "payment-worker.log") == 0
    assert settled >= PAYMENTS


def _metric(url: str, series: str, log: Path, wait_s: float = 30.0) -> float:
    """One series' value from a /metrics page (0 when absent), waiting for a process still starting."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                lines = response.read().decode().splitlines()
            break
        except OSError as exc:
            error = str(exc)
        if time.monotonic() >= deadline:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
            pytest.fail(f"{url}: {error}; {log}:\n{tail}")
        time.sleep(0.5)
    for line in lines:
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _get(platform: Platform, path: str) -> dict[str, Any]:
    request = urllib.request.Request(
        platform.gateway_urls()[0] + path, headers={"Authorization": f"Bearer {platform.api_key}"}
    )
    with urllib.request.urlopen(request, timeout=15) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def _succeeded_into(platform: Platform, account_id: str) -> int:
    """The sum of the client's succeeded payments into ``account_id``, from the gateway's listing."""
    total_minor: int = 0
    after = ""
    while True:
        page = _get(platform, f"/v1/payments?limit=100{'&starting_after=' + after if after else ''}")
        total_minor += sum(
            p["amount"] for p in page["data"] if p["destination"] == account_id and p["status"] == "succeeded"
        )
        if not page["has_more"]:
            return total_minor
        after = page["data"][-1]["id"]


def test_balances_are_read_from_the_shard_databases_the_operator_gave_the_workers(platform: Platform) -> None:
    """The operator hands the payment workers every LedgerShard's database (one Secret-backed variable per
    shard, composed with $(VAR) expansion): a balance is the ledger's, not an empty account."""
    count = 5
    load = _run_payments(platform, count)
    assert dict(load.stats.final) == {"succeeded": count}, load.stats.summary()
    deadline = time.monotonic() + BALANCE_TIMEOUT_S
    while True:  # a cross-shard payment's credit leg may land a moment after the payment succeeded
        expected_minor = _succeeded_into(platform, load.destination)
        wallet = _get(platform, f"/v1/accounts/{load.destination}/balance")
        source = _get(platform, f"/v1/accounts/{load.source}/balance")
        if wallet["posted"] == expected_minor or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert expected_minor >= 100 + sum(100 + number for number in range(1, count + 1))
    assert (wallet["posted"], wallet["available"], wallet["currency"]) == (
        expected_minor,
        expected_minor,
        platform.currency,
    ), wallet
    assert source["posted"] == -expected_minor, source


def test_a_restarted_kubelet_reaps_the_old_processes_and_runs_the_pods_again(platform: Platform) -> None:
    pods = _wait_all_ready(platform, "before the kubelet restart")  # an autoscaler may have just added one
    before = {(p["metadata"]["uid"], c["name"]): _pid(c) for p in pods for c in p["status"]["containerStatuses"]}
    kubelet_pid = platform.kubelet.recorded_pid()
    assert kubelet_pid is not None
    os.kill(kubelet_pid, signal.SIGKILL)  # no chance to stop its pods: they become orphans
    deadline = time.monotonic() + 10
    while platform.kubelet.is_running() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(Path(f"/proc/{pid}").exists() for pid in before.values())
    platform.kubelet.start()
    deadline = time.monotonic() + GONE_TIMEOUT_S
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in before.values()):
        time.sleep(0.2)
    assert not [pid for pid in before.values() if Path(f"/proc/{pid}").exists()], "orphans were not reaped"
    for pod in _wait_all_ready(platform, "after the kubelet restart"):
        for container in pod["status"]["containerStatuses"]:
            key = (pod["metadata"]["uid"], container["name"])
            if key in before:
                assert _pid(container) != before[key]
                assert container["restartCount"] >= 1, container


def test_a_replaced_worker_is_found_by_the_gateway(platform: Platform) -> None:
    workers = [p["metadata"]["name"] for p in platform.pods() if "payment-worker" in p["metadata"]["name"]]
    platform.kubectl.run("delete", "pod", workers[0], "-n", platform.namespace, "--wait=false")
    deadline = time.monotonic() + GONE_TIMEOUT_S
    while time.monotonic() < deadline and workers[0] in [p["metadata"]["name"] for p in platform.pods()]:
        time.sleep(0.5)
    pods = _wait_all_ready(platform, "after a worker was replaced")
    assert len([p for p in pods if "payment-worker" in p["metadata"]["name"]]) == len(workers)
    load = _run_payments(platform, PAYMENTS // 2)
    assert dict(load.stats.final) == {"succeeded": PAYMENTS // 2}, load.stats.summary()
    assert not load.stats.rejected, load.stats.summary()


def test_deleting_the_rail_stops_its_processes(platform: Platform) -> None:
    pids = [_pid(c) for p in platform.pods() for c in p["status"]["containerStatuses"]]
    assert pids
    for kind in ("ledgershard", "paymentrail"):
        platform.kubectl.run("delete", kind, "--all", "-n", platform.namespace, "--wait=false")
    deadline = time.monotonic() + GONE_TIMEOUT_S
    alive, pods = pids, platform.pods()
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
        pods = platform.pods()
        if not alive and not pods:
            break
        time.sleep(1.0)
    assert not alive, f"processes still running after the rail was deleted: {alive}"
    assert not pods, [p["metadata"]["name"] for p in pods]
    assert platform.kubelet.is_running(), "the kubelet keeps running"
