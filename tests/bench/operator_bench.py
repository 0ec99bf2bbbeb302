"""Operator benchmark: time from ``kubectl apply`` of a rail with two shards to Ready, and operator memory
with many rails. Real API server + controller-manager, Kafka and SPIRE server (``payplane infra up``).

The operator runs as its own process (``python -m payplane_operator``) watching one fresh namespace, with
local SPIRE selectors and Deployment readiness by observation (no kubelet here: pods never run, so
"workloads ready" means the Deployment controller has observed the latest spec). Every wait is bounded.

    .venv/bin/python -m tests.bench.operator_bench --ready-runs 10 --memory-rails 100
"""

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import yaml
from aiokafka.admin import AIOKafkaAdminClient
from kubernetes import client, config

from payplane.devinfra.endpoints import read_endpoints
from payplane.devinfra.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
GROUP, VERSION = "payplane.io", "v1alpha1"
POLL_S = 0.02
READY_TIMEOUT_S = 60.0
START_TIMEOUT_S = 60.0
MANY_TIMEOUT_S = 600.0


def _manifests(rail: str, partitions: int) -> list[dict[str, Any]]:
    half = partitions // 2
    scaling = {"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 3}}
    return [
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "PaymentRail",
            "metadata": {"name": rail},
            "spec": {
                "currency": "EUR",
                "amountLimits": {"maxMinor": 1_000_000},
                "payments": {"database": {"secretRef": {"name": "payments-db"}}},
                "ledger": {"partitions": partitions},
                "topics": {"partitions": 1, "deletionPolicy": "Delete"},
                "gateway": {"scaling": scaling},
                "paymentWorker": {"scaling": scaling},
            },
        },
        *(
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "LedgerShard",
                "metadata": {"name": f"{rail}-{suffix}"},
                "spec": {
                    "railRef": {"name": rail},
                    "partitions": {"first": first, "last": last},
                    "database": {"secretRef": {"name": "ledger-db"}},
                },
            }
            for suffix, first, last in (("a", 0, half - 1), ("b", half, partitions - 1))
        ),
    ]


def _secret(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {"dsn": "postgresql://x"}}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Bench:
    def __init__(self, endpoints: dict[str, str], namespace: str) -> None:
        self.endpoints = endpoints
        self.namespace = namespace
        self.api = config.new_client_from_config(config_file=endpoints["KUBECONFIG"])
        self.custom = client.CustomObjectsApi(self.api)
        self.operator: subprocess.Popen[bytes] | None = None
        self.metrics_url = ""
        self.env = {**os.environ, **endpoints}

    def kubectl(self, *args: str, stdin: str | None = None, timeout_s: float = 120.0) -> None:
        subprocess.run(
            [self.endpoints["PAYPLANE_KUBECTL"], *args],
            input=stdin,
            text=True,
            check=True,
            capture_output=True,
            env=self.env,
            timeout=timeout_s,
        )

    def setup(self) -> None:
        self.kubectl("apply", "-f", str(REPO / "crds"))
        self.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/paymentrails.payplane.io",
            "crd/ledgershards.payplane.io",
            "crd/kopfpeerings.kopf.dev",
        )
        self.kubectl("create", "namespace", self.namespace)
        self.kubectl(
            "-n",
            self.namespace,
            "apply",
            "-f",
            "-",
            stdin=yaml.safe_dump_all(
                [
                    {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "payplane-operator"}},
                    # every rail and every shard name one of these (one apply of 300 objects stays one)
                    _secret("payments-db"),
                    _secret("ledger-db"),
                ]
            ),
        )

    def start_operator(self, log: Path) -> None:
        port, metrics_port = _free_port(), _free_port()
        env = {
            **self.env,
            "PAYPLANE_WATCH_NAMESPACES": self.namespace,
            "PAYPLANE_IDENTITY_MODE": "local",
            "PAYPLANE_WORKLOAD_READINESS": "observed",
            "PAYPLANE_LIVENESS_ENDPOINT": f"http://127.0.0.1:{port}/healthz",
            "PAYPLANE_METRICS_PORT": str(metrics_port),
        }
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.operator = subprocess.Popen(
            [sys.executable, "-m", "payplane_operator"], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise SystemExit(f"the operator did not come up within {START_TIMEOUT_S:.0f} s; see {log}")

    def rss_kib(self) -> tuple[int, int]:
        assert self.operator is not None
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{self.operator.pid}/status").read_text().splitlines())
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])

    def cpu_s(self) -> float:
        """The operator's user + system CPU time so far."""
        assert self.operator is not None
        fields = Path(f"/proc/{self.operator.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def passes(self) -> dict[str, float]:
        """Reconciles so far by pass (full, light), from the operator's own metrics."""
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            text = response.read().decode()
        counts = {"full": 0.0, "light": 0.0}
        for line in text.splitlines():
            if line.startswith("payplane_operator_reconciles_total{"):
                labels, value = line.rsplit(" ", 1)
                counts["light" if 'pass="light"' in labels else "full"] += float(value)
        return counts

    def ready(self, rail: str) -> bool:
        obj = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, "paymentrails", rail)
        return any(
            c["type"] == "Ready" and c["status"] == "True" for c in (obj.get("status") or {}).get("conditions", [])
        )

    def time_to_ready(self, rail: str, partitions: int) -> float:
        started = time.monotonic()
        self.kubectl("-n", self.namespace, "apply", "-f", "-", stdin=yaml.safe_dump_all(_manifests(rail, partitions)))
        while time.monotonic() - started < READY_TIMEOUT_S:
            if self.ready(rail):
                return time.monotonic() - started
            time.sleep(POLL_S)
        raise SystemExit(f"rail {rail} not Ready within {READY_TIMEOUT_S:.0f} s")

    def many(self, prefix: str, count: int) -> tuple[float, float]:
        """Seconds until every rail is Ready, and how many of them kubectl took to apply the manifests."""
        started = time.monotonic()
        manifests = [m for i in range(count) for m in _manifests(f"{prefix}{i}", 2)]
        # kubectl applies 300 objects one by one: minutes on a loaded 2-core machine
        self.kubectl("-n", self.namespace, "apply", "-f", "-", stdin=yaml.safe_dump_all(manifests), timeout_s=600.0)
        applied_s = time.monotonic() - started
        pending = {f"{prefix}{i}" for i in range(count)}
        while pending and time.monotonic() - started < MANY_TIMEOUT_S:
            pending = {rail for rail in pending if not self.ready(rail)}
            time.sleep(0.5)
        if pending:
            raise SystemExit(f"{len(pending)} rails not Ready within {MANY_TIMEOUT_S:.0f} s")
        return time.monotonic() - started, applied_s

    def teardown(self, rails: list[str]) -> None:
        try:
            started = time.monotonic()
            for plural in ("paymentrails", "ledgershards"):
                self.kubectl("-n", self.namespace, "delete", plural, "--all", "--timeout=600s")
            print(
                f"deleting all {len(rails)} rails and their shards (finalizers: SPIRE entries, topics): "
                f"{time.monotonic() - started:.1f} s"
            )
        finally:
            if self.operator is not None:
                self.operator.send_signal(signal.SIGTERM)
                self.operator.wait(timeout=60)
            self.kubectl("delete", "namespace", self.namespace, "--wait=false")
            self.force_delete_pods()
            asyncio.run(_delete_topics(self.endpoints["KAFKA_BOOTSTRAP"], rails))

    def force_delete_pods(self, timeout_s: float = 120.0) -> None:
        """Without a kubelet nothing confirms a pod's deletion, so the namespace would stay Terminating."""
        deadline = time.monotonic() + timeout_s
        core = client.CoreV1Api(self.api)
        while time.monotonic() < deadline:
            if not any(ns.metadata.name == self.namespace for ns in core.list_namespace().items):
                return
            self.kubectl("-n", self.namespace, "delete", "pods", "--all", "--grace-period=0", "--force")
            time.sleep(2)


async def _delete_topics(bootstrap: str, rails: list[str]) -> None:
    """Rails use deletionPolicy Delete; this removes whatever a failed run left behind."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        prefixes = tuple(f"payplane.{rail}." for rail in rails)
        leftovers = [t for t in await admin.list_topics() if t.startswith(prefixes)]
        if leftovers:
            await admin.delete_topics(leftovers)
    finally:
        await admin.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ready-runs", type=int, default=10, help="rails (with two shards each) timed one by one")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--memory-rails", type=int, default=100, help="rails (with two shards each) for memory")
    args = parser.parse_args()

    endpoints = read_endpoints(load_settings().endpoints_file)
    run = uuid.uuid4().hex[:6]
    bench = Bench(endpoints, f"bench-{run}")
    log = Path(endpoints["PAYPLANE_STATE_DIR"]) / "logs" / f"operator-bench-{run}.log"
    rails = [f"b{run}t{i}" for i in range(args.ready_runs)] + [f"b{run}m{i}" for i in range(args.memory_rails)]
    bench.setup()
    try:
        bench.start_operator(log)
        idle_rss, _ = bench.rss_kib()
        times = [bench.time_to_ready(f"b{run}t{i}", args.partitions) for i in range(args.ready_runs)]
        print(
            f"time to Ready, rail + 2 shards ({args.partitions} partitions), {len(times)} runs: "
            f"min {min(times):.2f} s, median {statistics.median(times):.2f} s, max {max(times):.2f} s"
        )
        if args.memory_rails:
            cpu_before, passes_before = bench.cpu_s(), bench.passes()
            elapsed, applied_s = bench.many(f"b{run}m", args.memory_rails)
            cpu_s, passes = bench.cpu_s() - cpu_before, bench.passes()
            time.sleep(5)
            rss, peak = bench.rss_kib()
            total = args.memory_rails + args.ready_runs
            print(
                f"{args.memory_rails} more rails (+{2 * args.memory_rails} shards) applied at once: all Ready "
                f"after {elapsed:.1f} s; operator RSS idle {idle_rss / 1024:.0f} MiB, with {total} rails "
                f"{rss / 1024:.0f} MiB (peak {peak / 1024:.0f} MiB)"
            )
            full, light = (passes[p] - passes_before[p] for p in ("full", "light"))
            print(
                f"  of which kubectl apply {applied_s:.1f} s; operator CPU {cpu_s:.1f} s; "
                f"reconciles {full:.0f} full + {light:.0f} light (readiness only)"
            )
    finally:
        bench.teardown(rails)
    print(f"operator log: {log}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
