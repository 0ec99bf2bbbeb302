"""``payplane up``: the whole platform on this machine, the example rail applied and payments flowing.

Steps (each announced): the local infrastructure (``payplane infra up``) → the CRDs → the namespace,
the rail's databases and their Secrets → the operator (local identity mode, readiness ``available``)
and the process kubelet, both in the background with logs under ``<state>/logs/`` → the example rail
(``crds/examples/card-eur.yaml``) → wait until it is Ready (its pods Running and ready) → an API
client → the demo load. ``bring_up`` does all of it and returns a ``Platform`` that ``stop``s what it
started (the infrastructure stays up); the e2e test calls the same function in a fresh namespace.
Every step is idempotent: a second run reuses what exists and replaces processes a dead run left.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from payplane.devinfra import stack
from payplane.devinfra.errors import InfraError
from payplane.devinfra.procs import ManagedProcess
from payplane.devinfra.progress import say
from payplane.devinfra.settings import InfraSettings

REPO_DIR: Final = Path(__file__).resolve().parents[4]
CRD_DIR: Final = REPO_DIR / "crds"
EXAMPLE_FILE: Final = CRD_DIR / "examples" / "card-eur.yaml"
EXAMPLE_RAIL: Final = "card-eur"
DEFAULT_NAMESPACE: Final = "payments"
DEFAULT_NODE: Final = "payplane-local"
READY_TIMEOUT_S: Final = 240.0
POLL_S: Final = 2.0
KUBECTL_TIMEOUT_S: Final = 60.0
PROCESS_STOP_GRACE_S: Final = 45.0
GATEWAY_HTTP_PORT: Final = 8080
DATABASE_NAME_MAX: Final = 63
GROUP: Final = "payplane.io"


class UpError(InfraError):
    """A step of ``payplane up`` failed; the message names the step and where to look."""


@dataclass(frozen=True)
class UpOptions:
    namespace: str = DEFAULT_NAMESPACE
    rail_name: str = EXAMPLE_RAIL  # the example's rail, renamed (with its shards and Secrets) when different
    node_name: str = DEFAULT_NODE
    topics_deletion_policy: str | None = None  # "Delete": the rail's topics go with it (tests)
    ready_timeout_s: float = READY_TIMEOUT_S
    operator_drift_interval_s: float | None = None  # the operator's default (60 s) unless set (tests)


# --- pure: the example manifests ------------------------------------------------------------------


def _renamed(name: str, old: str, new: str) -> str:
    return new + name[len(old) :] if name == old or name.startswith(old + "-") else name


def example_documents(text: str, rail_name: str, topics_deletion_policy: str | None = None) -> list[dict[str, Any]]:
    """The example's objects; the rail's name (and the names derived from it) replaced by ``rail_name``."""
    docs = [doc for doc in yaml.safe_load_all(text) if doc]
    for doc in docs:
        meta, spec = doc["metadata"], doc.get("spec", {})
        meta["name"] = _renamed(meta["name"], EXAMPLE_RAIL, rail_name)
        if "railRef" in spec:
            spec["railRef"]["name"] = _renamed(spec["railRef"]["name"], EXAMPLE_RAIL, rail_name)
        for ref in _secret_refs(spec):
            ref["name"] = _renamed(ref["name"], EXAMPLE_RAIL, rail_name)
        if doc["kind"] == "PaymentRail" and topics_deletion_policy is not None:
            spec.setdefault("topics", {})["deletionPolicy"] = topics_deletion_policy
    return docs


def _secret_refs(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    holders = [spec.get("payments", {}).get("database", {}), spec.get("database", {}), spec.get("redis", {})]
    return [holder["secretRef"] for holder in holders if "secretRef" in holder]


@dataclass(frozen=True)
class SecretNeed:
    name: str
    key: str
    kind: str  # "postgres" or "redis"


def secrets_needed(docs: Iterable[Mapping[str, Any]]) -> list[SecretNeed]:
    """Every Secret the example's rail and shards reference, and what it must hold."""
    needs = []
    for doc in docs:
        spec = doc.get("spec", {})
        for holder, kind, default_key in (
            (spec.get("payments", {}).get("database", {}), "postgres", "dsn"),
            (spec.get("database", {}), "postgres", "dsn"),
            (spec.get("redis", {}), "redis", "url"),
        ):
            ref = holder.get("secretRef")
            if ref is not None:
                needs.append(SecretNeed(ref["name"], ref.get("key", default_key), kind))
    return needs


def database_name(namespace: str, secret_name: str) -> str:
    """A PostgreSQL database of its own for each (namespace, Secret)."""
    name = re.sub(r"[^a-z0-9_]", "_", f"pp_{namespace}_{secret_name}".lower())
    return name[:DATABASE_NAME_MAX]


def dsn_for(base_dsn: str, database: str) -> str:
    return base_dsn.rsplit("/", 1)[0] + "/" + database


def secret_manifest(name: str, data: Mapping[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": "Opaque", "stringData": data}


def rail_progress(rail: Mapping[str, Any]) -> str:
    """One line about where a rail stands: phase, workers, the conditions that are not True."""
    status = rail.get("status") or {}
    waiting = [
        f"{c['type']}: {c.get('reason', '')} {c.get('message', '')}".strip()
        for c in status.get("conditions") or []
        if c.get("status") != "True" and c.get("type") != "Ready"
    ]
    line = f"phase {status.get('phase', '(none yet)')}, workers ready {status.get('workersReady', '-')}"
    return line + (f"; waiting for {'; '.join(waiting)}" if waiting else "")


def pods_ready_since(pods: Iterable[Mapping[str, Any]], since: str) -> tuple[int, int]:
    """(pods whose Ready condition became True at or after ``since`` (RFC 3339, UTC), pods not terminating)."""
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    ready = 0
    for pod in live:
        conditions = {c["type"]: c for c in (pod.get("status") or {}).get("conditions") or []}
        condition = conditions.get("Ready", {})
        if condition.get("status") == "True" and condition.get("lastTransitionTime", "") >= since:
            ready += 1
    return ready, len(live)


def ready_addresses(slices: Iterable[Mapping[str, Any]]) -> list[str]:
    found: set[str] = set()
    for item in slices:
        for endpoint in item.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is not False:
                found.update(endpoint.get("addresses") or [])
    return sorted(found)


# --- I/O: kubectl, psql, processes ----------------------------------------------------------------


@dataclass(frozen=True)
class Kubectl:
    binary: str
    kubeconfig: str

    def run(self, *args: str, stdin: str | None = None) -> str:
        env = {**os.environ, "KUBECONFIG": self.kubeconfig}
        try:
            done = subprocess.run(
                [self.binary, *args],
                input=stdin,
                env=env,
                capture_output=True,
                text=True,
                timeout=KUBECTL_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise UpError(f"kubectl {' '.join(args)} did not answer within {KUBECTL_TIMEOUT_S:.0f} s") from None
        if done.returncode != 0:
            raise UpError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def apply(self, docs: list[dict[str, Any]], namespace: str | None = None) -> None:
        scope = ["-n", namespace] if namespace else []
        self.run("apply", *scope, "-f", "-", stdin=yaml.safe_dump_all(docs))

    def get_json(self, *args: str) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.run("get", *args, "-o", "json"))
        return parsed


def psql(endpoints: Mapping[str, str], sql: str) -> str:
    env = {**os.environ, "PGHOST": endpoints["PGHOST"], "PGPORT": endpoints["PGPORT"], "PGUSER": endpoints["PGUSER"]}
    done = subprocess.run(
        ["psql", "-X", "-qAt", "-d", "postgres", "-c", sql], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise UpError(f"psql failed ({sql}): {done.stderr.strip()}")
    return done.stdout.strip()


def ensure_database(endpoints: Mapping[str, str], database: str) -> None:
    if psql(endpoints, f"select 1 from pg_database where datname = '{database}'") != "1":  # noqa: S608 - our own name
        psql(endpoints, f'create database "{database}"')


def drop_database(endpoints: Mapping[str, str], database: str) -> None:
    psql(endpoints, f'drop database if exists "{database}" with (force)')


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def payplane_command(*args: str, env: Mapping[str, str] | None = None) -> str:
    """Run the ``payplane`` CLI (as a user would) and return its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "payplane", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=KUBECTL_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise UpError(f"payplane {' '.join(args[:2])} failed: {done.stderr.strip()[-2000:]}")
    return done.stdout


# --- the platform ---------------------------------------------------------------------------------


@dataclass
class Platform:
    """What ``bring_up`` started and where everything is."""

    settings: InfraSettings
    options: UpOptions
    endpoints: dict[str, str]
    kubectl: Kubectl
    operator: ManagedProcess
    kubelet: ManagedProcess
    currency: str
    payments_dsn: str
    ledger_dsns: list[str]
    databases: list[str]
    kubelet_started_at: str = ""  # RFC 3339, whole seconds (as conditions carry it)
    api_key: str = ""
    client_id: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def rail(self) -> str:
        return self.options.rail_name

    @property
    def namespace(self) -> str:
        return self.options.namespace

    @property
    def pods_dir(self) -> Path:
        return self.settings.state_dir / "kubelet" / self.options.node_name / "pods"

    def gateway_urls(self) -> list[str]:
        slices = self.kubectl.get_json(
            "endpointslices", "-n", self.namespace, "-l", f"kubernetes.io/service-name={self.rail}-gateway"
        )
        return [f"http://{ip}:{GATEWAY_HTTP_PORT}" for ip in ready_addresses(slices.get("items") or [])]

    def pods(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.kubectl.get_json("pods", "-n", self.namespace).get("items") or []
        return items

    def stop(self) -> None:
        """Stop the kubelet (it stops its pods' processes) and the operator; the infrastructure stays."""
        for process in (self.kubelet, self.operator):
            if process.stop(grace_s=PROCESS_STOP_GRACE_S):
                say(f"stopped {process.name}")


def _apply_crds(kubectl: Kubectl) -> None:
    kubectl.run("apply", "-f", str(CRD_DIR))
    names = [
        doc["metadata"]["name"]
        for path in sorted(CRD_DIR.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") == "CustomResourceDefinition"
    ]
    kubectl.run("wait", "--for=condition=Established", "--timeout=60s", *[f"crd/{name}" for name in names])


def _prepare_secrets(
    endpoints: Mapping[str, str], kubectl: Kubectl, namespace: str, docs: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, str], list[str]]:
    """Create each referenced database (if missing) and the Secret naming it; returns secrets, dsns, databases."""
    manifests, dsns, databases = [], {}, []
    for need in secrets_needed(docs):
        if need.kind == "redis":
            value = endpoints["PAYPLANE_REDIS_URL"]
        else:
            database = database_name(namespace, need.name)
            ensure_database(endpoints, database)
            databases.append(database)
            value = dsns[need.name] = dsn_for(endpoints["PAYPLANE_POSTGRES_DSN"], database)
        manifests.append(secret_manifest(need.name, {need.key: value}))
    kubectl.apply(manifests, namespace)
    return manifests, dsns, databases


def _start(process: ManagedProcess, what: str) -> None:
    if process.stop(grace_s=PROCESS_STOP_GRACE_S):
        say(f"stopped the {what} a previous run left running")
    process.start()
    say(f"{what} started (log {process.log_file})")


def _operator(settings: InfraSettings, endpoints: Mapping[str, str], options: UpOptions) -> ManagedProcess:
    env = {
        "KUBECONFIG": endpoints["KUBECONFIG"],
        "KAFKA_BOOTSTRAP": endpoints["KAFKA_BOOTSTRAP"],
        "PAYPLANE_SPIRE_SERVER_SOCKET": endpoints["PAYPLANE_SPIRE_SERVER_SOCKET"],
        "PAYPLANE_SPIRE_TRUST_DOMAIN": endpoints["PAYPLANE_SPIRE_TRUST_DOMAIN"],
        "PAYPLANE_SPIRE_NODE_ID": endpoints["PAYPLANE_SPIRE_NODE_ID"],
        "PAYPLANE_IDENTITY_MODE": "local",
        "PAYPLANE_WORKLOAD_READINESS": "available",
        "PAYPLANE_WATCH_NAMESPACES": options.namespace,
        "PAYPLANE_PEERING_STANDALONE": "true",
        "PAYPLANE_LIVENESS_ENDPOINT": f"http://127.0.0.1:{_free_port()}/healthz",
        "PAYPLANE_LOG_FORMAT": "json",
        # the rail's pods go to this run's kubelet only (other kubelets on the machine serve other namespaces)
        "PAYPLANE_WORKLOAD_NODE_SELECTOR": f"kubernetes.io/hostname={options.node_name}",
    }
    if options.operator_drift_interval_s is not None:
        env["PAYPLANE_DRIFT_INTERVAL_S"] = str(options.operator_drift_interval_s)
    return ManagedProcess(
        name=f"operator-{options.namespace}",
        argv=[sys.executable, "-m", "payplane_operator"],
        run_dir=settings.run_dir,
        log_dir=settings.log_dir,
        env=env,
        stop_with_parent=True,
    )


def _kubelet(settings: InfraSettings, options: UpOptions) -> ManagedProcess:
    return ManagedProcess(
        name=f"kubelet-{options.node_name}",
        argv=[
            sys.executable,
            "-m",
            "payplane",
            "kubelet",
            "--node-name",
            options.node_name,
            "--namespace",
            options.namespace,
        ],
        run_dir=settings.run_dir,
        log_dir=settings.log_dir,
        stop_with_parent=True,  # a killed `payplane up` takes its kubelet (and so the pods) with it
    )


def _wait_ready(platform: Platform, timeout_s: float) -> None:
    """Until the rail is Ready, every pod is Ready as reported by *this* run's kubelet (a previous run's
    pods keep their old Ready status until the new kubelet's first report), and a gateway has an endpoint."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        for process in (platform.operator, platform.kubelet):
            if not process.is_running():
                raise UpError(f"{process.name} exited; log {process.log_file}:\n{process.log_tail()}")
        rail = platform.kubectl.get_json("paymentrail", platform.rail, "-n", platform.namespace)
        ready, total = pods_ready_since(platform.pods(), platform.kubelet_started_at)
        line = f"{rail_progress(rail)}; pods ready {ready}/{total}"
        if line != last:
            say(f"rail {platform.rail}: {line}")
            last = line
        rail_ready = (rail.get("status") or {}).get("phase") == "Ready"
        if rail_ready and total and ready == total and platform.gateway_urls():
            return
        time.sleep(POLL_S)
    pods = "\n".join(f"  {p['metadata']['name']}: {(p.get('status') or {}).get('phase')}" for p in platform.pods())
    raise UpError(
        f"rail {platform.rail} not Ready within {timeout_s:.0f} s ({last}); pods:\n{pods}\n"
        f"logs: {platform.operator.log_file}, {platform.kubelet.log_file}, {platform.pods_dir}/*/*.log"
    )


def _api_client(platform: Platform) -> None:
    """Reuse the demo client of an earlier run if it is still active, else create one."""
    state = platform.settings.state_dir / "up" / f"{platform.namespace}-{platform.rail}-client.json"
    dsn_args = ["--dsn", platform.payments_dsn]
    if state.exists():
        saved = json.loads(state.read_text())
        listed = json.loads(payplane_command("clients", *dsn_args, "list"))
        if any(c["id"] == saved["id"] and not c["revoked_at"] for c in listed):
            platform.client_id, platform.api_key = saved["id"], saved["api_key"]
            say(f"API client {saved['id']} reused")
            return
    created = json.loads(payplane_command("clients", *dsn_args, "create", "demo"))
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps({"id": created["id"], "api_key": created["api_key"]}))
    state.chmod(0o600)
    platform.client_id, platform.api_key = created["id"], created["api_key"]
    say(f"API client {created['id']} created (payplane clients create)")


def bring_up(settings: InfraSettings, options: UpOptions) -> Platform:
    """Everything up to a Ready rail and an API key. On failure what was started is stopped again."""
    if os.geteuid() != 0:
        raise UpError("payplane up runs pods with their own group ids (local SPIFFE identities): run it as root")
    say("1/6 local infrastructure: PostgreSQL, Redis, Kafka, Kubernetes API, SPIRE (payplane infra up)")
    endpoints = stack.up(settings)
    kubectl = Kubectl(endpoints["PAYPLANE_KUBECTL"], endpoints["KUBECONFIG"])
    say(f"2/6 CRDs from {CRD_DIR} (PaymentRail, LedgerShard, FraudPolicy)")
    _apply_crds(kubectl)
    namespace = options.namespace
    docs = example_documents(EXAMPLE_FILE.read_text(), options.rail_name, options.topics_deletion_policy)
    say(f"3/6 namespace {namespace}: databases and Secrets for rail {options.rail_name}")
    kubectl.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}])
    _, dsns, databases = _prepare_secrets(endpoints, kubectl, namespace, docs)
    rail_doc = next(d for d in docs if d["kind"] == "PaymentRail")
    shard_docs = [d for d in docs if d["kind"] == "LedgerShard"]
    platform = Platform(
        settings=settings,
        options=options,
        endpoints=endpoints,
        kubectl=kubectl,
        operator=_operator(settings, endpoints, options),
        kubelet=_kubelet(settings, options),
        currency=rail_doc["spec"]["currency"],
        payments_dsn=dsns[rail_doc["spec"]["payments"]["database"]["secretRef"]["name"]],
        ledger_dsns=[dsns[d["spec"]["database"]["secretRef"]["name"]] for d in shard_docs],
        databases=databases,
    )
    try:
        say("4/6 the operator (local identities, watching namespace " + namespace + ") and the process kubelet")
        _start(platform.operator, "operator")
        platform.kubelet_started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        _start(platform.kubelet, f"process kubelet (node {options.node_name})")
        say(f"5/6 the example rail: kubectl apply -n {namespace} -f {EXAMPLE_FILE.relative_to(REPO_DIR)}")
        kubectl.apply(docs, namespace)
        _wait_ready(platform, options.ready_timeout_s)
        say("6/6 an API client for the demo load")
        _api_client(platform)
    except BaseException:
        platform.stop()
        raise
    return platform


def metrics_urls(pods: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """Every running pod's ``/metrics`` URLs, one per container port whose name ends in ``metrics`` (a
    writer pod's relay serves its own), with the pod and container they name."""
    found = []
    for pod in pods:
        address = (pod.get("status") or {}).get("podIP")
        if not address:
            continue
        for container in pod["spec"]["containers"]:
            for port in container.get("ports") or []:
                if str(port.get("name", "")).endswith("metrics"):
                    where = f"{pod['metadata']['name']} ({container['name']})"
                    found.append((f"http://{address}:{port['containerPort']}/metrics", where))
    return found


def where_to_look(platform: Platform, source: str, destination: str, rate_per_s: float) -> str:
    """The block printed once payments flow."""
    endpoints, ns = platform.endpoints, platform.namespace
    urls = platform.gateway_urls()
    gateway = urls[0] if urls else "(no ready gateway)"
    pods = platform.pods()
    metrics = [f"      {url}   {where}" for url, where in metrics_urls(pods)]
    kube = f"KUBECONFIG={endpoints['KUBECONFIG']} {endpoints['PAYPLANE_KUBECTL']}"
    verify = " ".join(f"--dsn {dsn}" for dsn in platform.ledger_dsns)
    body = json.dumps({"amount": 1250, "currency": platform.currency, "source": source, "destination": destination})
    return "\n".join(
        [
            "",
            f"payplane is running: rail {platform.rail} in namespace {ns}, {len(pods)} pods as local processes.",
            f"  gateway         {', '.join(urls) or gateway}",
            f"  API key         {platform.api_key}   (client {platform.client_id})",
            "  a payment:",
            f"      curl -s {gateway}/v1/payments -H 'Authorization: Bearer {platform.api_key}' \\",
            '        -H "Idempotency-Key: $(cat /proc/sys/kernel/random/uuid)" \\',
            "        -H 'Content-Type: application/json' \\",
            f"        -d '{body}'",
            f"  resources       {kube} get payplane,pods -n {ns} -o wide",
            "  metrics",
            *metrics,
            f"  logs            operator {platform.operator.log_file}",
            f"                  kubelet  {platform.kubelet.log_file}",
            f"                  pods     {platform.pods_dir}/{ns}_<pod>_<uid>/<container>.log",
            f"  ledger          {sys.executable} -m payplane ledger verify {verify}",
            f"  demo load       {rate_per_s:g} payments/s from {source} to {destination}; progress every 10 s"
            if rate_per_s > 0
            else "  demo load       none (--rate 0); the accounts above are open for your own payments",
            "Ctrl-C stops the load, the kubelet (and so the pods) and the operator; the infrastructure keeps",
            "running (`payplane infra down` stops it).",
            "",
        ]
    )
