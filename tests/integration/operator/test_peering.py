"""Two operator processes with the same peering: only the higher priority acts; when it dies (SIGKILL,
no goodbye) the other takes over once the dead one's heartbeat expires, and carries on reconciling."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Infra
from tests.integration.operator.conftest import Cluster, wait_for

LIFETIME_S = 15  # kopf renews every lifetime minus 5-10 s
START_S = 60.0
pytestmark = pytest.mark.timeout(300)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


Started = dict[str, tuple[subprocess.Popen[bytes], Path]]


@pytest.fixture
def operators(infra: Infra, cluster: Cluster, tmp_path: Path) -> Iterator[Started]:
    """The leader starts first; with mandatory peering the standby starts paused and stays so."""
    started: Started = {}
    for name, priority in (("leader", 100), ("standby", 10)):
        port = _free_port()
        env = {
            **os.environ,
            "KUBECONFIG": infra["KUBECONFIG"],
            "KAFKA_BOOTSTRAP": infra["KAFKA_BOOTSTRAP"],
            "PAYPLANE_SPIRE_SERVER_SOCKET": infra["PAYPLANE_SPIRE_SERVER_SOCKET"],
            "PAYPLANE_SPIRE_TRUST_DOMAIN": infra["PAYPLANE_SPIRE_TRUST_DOMAIN"],
            "PAYPLANE_SPIRE_NODE_ID": infra["PAYPLANE_SPIRE_NODE_ID"],
            "PAYPLANE_IDENTITY_MODE": "local",
            "PAYPLANE_WORKLOAD_READINESS": "observed",
            "PAYPLANE_WATCH_NAMESPACES": cluster.namespace,
            "PAYPLANE_PEERING_PRIORITY": str(priority),
            "PAYPLANE_PEERING_LIFETIME_S": str(LIFETIME_S),
            "PAYPLANE_LIVENESS_ENDPOINT": f"http://127.0.0.1:{port}/healthz",
        }
        log = tmp_path / f"{name}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "payplane_operator"], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT
        )
        started[name] = (process, log)
        wait_for(
            f"the {name} operator to log its start",
            lambda log=log: "payplane operator:" in log.read_text(),
            timeout_s=START_S,
        )
    try:
        yield started
    finally:
        survivor = [p for p, _ in started.values() if p.poll() is None]
        if survivor:
            cluster.delete_all()  # while an operator still runs its finalizers
        for process, _ in started.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()


def test_only_the_leader_acts_and_the_standby_takes_over_when_it_dies(
    cluster: Cluster, operators: Started, run_id: str
) -> None:
    leader, leader_log = operators["leader"]
    _, standby_log = operators["standby"]
    name = f"peer-{run_id}"
    rail = {
        "apiVersion": "payplane.io/v1alpha1",
        "kind": "PaymentRail",
        "metadata": {"name": name},
        "spec": {
            "currency": "EUR",
            "amountLimits": {"maxMinor": 100},
            "payments": {"database": {"secretRef": {"name": "payments-db"}}},
            "ledger": {"partitions": 1},
            "topics": {"partitions": 1, "deletionPolicy": "Delete"},
        },
    }
    cluster.apply(rail)
    cluster.wait_condition("PaymentRail", name, "TopicsReady", generation=1)
    line = f"reconciled PaymentRail {cluster.namespace}/{name}"
    wait_for("the leader to log its reconcile", lambda: line in leader_log.read_text())
    assert "reconciled PaymentRail" not in standby_log.read_text()

    leader.send_signal(signal.SIGKILL)
    leader.wait(timeout=10)
    killed = time.monotonic()
    wait_for(
        "the standby to resume after the leader's heartbeat expired",
        lambda: "Resuming operations" in standby_log.read_text(),
        timeout_s=3 * LIFETIME_S,
    )
    print(f"standby resumed {time.monotonic() - killed:.1f} s after the leader was killed")
    rail["spec"]["ledger"] = {"partitions": 2}
    cluster.apply(rail)
    cluster.wait_condition("PaymentRail", name, "TopicsReady", generation=2)
    wait_for("the standby to log its reconcile", lambda: line in standby_log.read_text())
