"""The operator against the real local control plane, Kafka and SPIRE server.

- ``crds``: crds/*.yaml applied with the real kubectl and Established (session).
- ``namespace``: a fresh namespace per module, with the kopf peering object the operator requires.
- ``operator``: the operator running in this process through ``kopf.testing.KopfRunner``, watching only
  that namespace, with local SPIRE selectors, Deployment readiness by observation (no kubelet: pods never
  run here) and a 2 s drift timer. On teardown it first deletes every payplane object in the namespace
  and waits for the finalizers, so nothing is left in SPIRE or stuck in Terminating.

Every wait is bounded and fails naming what it waited for.
"""

import asyncio
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from aiokafka.admin import AIOKafkaAdminClient
from kopf.testing import KopfRunner
from kubernetes import client
from kubernetes.client.rest import ApiException

from payplane.devinfra.spire_cli import RegistrationEntry, SpireServerCli
from payplane_operator.handlers import build_registry
from tests.integration.conftest import Infra
from tests.operator_support import CRD_DIR

GROUP, VERSION = "payplane.io", "v1alpha1"
PLURALS = {"PaymentRail": "paymentrails", "LedgerShard": "ledgershards", "FraudPolicy": "fraudpolicies"}
DRIFT_S = 2.0
WAIT_S = 45.0
POLL_S = 0.2
KUBECTL_TIMEOUT_S = 60.0
OPERATOR_STOP_S = 30.0
# Deleting a namespace waits for the namespace controller to empty it; on a busy 2-core machine (other
# suites creating and deleting namespaces at the same time) that has taken over a minute.
NAMESPACE_GONE_S = 180.0
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float = WAIT_S) -> T:
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(POLL_S)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")


@dataclass
class Cluster:
    """Helpers over the real API server, kubectl, Kafka and SPIRE for one test namespace."""

    infra: Infra
    api: client.ApiClient
    namespace: str
    rails_seen: set[str] = field(default_factory=set)  # their Kafka topics are deleted by delete_all

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.infra["PAYPLANE_KUBECTL"], "-n", self.namespace, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=KUBECTL_TIMEOUT_S,
            env={**os.environ, "KUBECONFIG": self.infra["KUBECONFIG"]},
            check=False,
        )
        if check and result.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    def apply(self, *manifests: dict[str, Any]) -> str:
        return self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(manifests)).stdout

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURALS[kind], name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def condition(self, kind: str, name: str, condition_type: str) -> dict[str, Any] | None:
        obj = self.get(kind, name) or {}
        for condition in (obj.get("status") or {}).get("conditions", []):
            if condition["type"] == condition_type:
                return dict(condition)
        return None

    def wait_condition(
        self,
        kind: str,
        name: str,
        condition_type: str,
        status: str = "True",
        *,
        reason: str | None = None,
        generation: int | None = None,
        timeout_s: float = WAIT_S,
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            found = self.condition(kind, name, condition_type)
            if found is None or found["status"] != status or (reason and found["reason"] != reason):
                return None
            if generation is not None and found.get("observedGeneration") != generation:
                return None
            return found

        return wait_for(
            f"{kind} {name} {condition_type}={status}" + (f" ({reason})" if reason else ""), probe, timeout_s
        )

    def deployment(self, name: str) -> Any | None:
        try:
            return self.apps.read_namespaced_deployment(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def spire(self) -> SpireServerCli:
        return SpireServerCli(
            Path(self.infra["PAYPLANE_SPIRE_SERVER_BIN"]), Path(self.infra["PAYPLANE_SPIRE_SERVER_SOCKET"])
        )

    def entries(self) -> dict[str, RegistrationEntry]:
        """This namespace's SPIRE entries, by entry ID."""
        prefix = f"payplane.{self.namespace}."
        return {e.entry_id: e for e in self.spire().entries() if e.entry_id.startswith(prefix)}

    def topics(self, names: Sequence[str]) -> dict[str, int]:
        """Partition counts of the topics that exist among ``names``."""

        async def describe() -> dict[str, int]:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.infra["KAFKA_BOOTSTRAP"])
            await admin.start()
            try:
                listed = set(await admin.list_topics())
                present = [n for n in names if n in listed]
                described = await admin.describe_topics(present) if present else []
                return {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}
            finally:
                await admin.close()

        return asyncio.run(describe())

    def kafka(self, call: Callable[[AIOKafkaAdminClient], Any]) -> Any:
        async def run() -> Any:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.infra["KAFKA_BOOTSTRAP"])
            await admin.start()
            try:
                return await call(admin)
            finally:
                await admin.close()

        return asyncio.run(run())

    def delete_all(self) -> None:
        """Delete every payplane object here, wait until their finalizers have run, then delete the topics
        of its rails that deletionPolicy Retain kept (the tests' topics must not pile up in Kafka)."""
        rails = self.rails_seen | {
            r["metadata"]["name"]
            for r in self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, "paymentrails")["items"]
        }
        for plural in PLURALS.values():
            for obj in self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, plural)["items"]:
                try:
                    self.custom.delete_namespaced_custom_object(
                        GROUP, VERSION, self.namespace, plural, obj["metadata"]["name"]
                    )
                except ApiException as exc:
                    if exc.status != 404:
                        raise
        for plural in PLURALS.values():
            wait_for(
                f"every {plural} in {self.namespace} to be finalized and gone",
                lambda p=plural: (
                    not self.custom.list_namespaced_custom_object(  # type: ignore[misc]
                        GROUP, VERSION, self.namespace, p
                    )["items"]
                ),
            )
        if rails:
            prefixes = tuple(f"payplane.{rail}." for rail in rails)

            async def delete_topics(admin: AIOKafkaAdminClient) -> None:
                kept = [t for t in await admin.list_topics() if t.startswith(prefixes)]
                if kept:
                    await admin.delete_topics(kept)

            self.kafka(delete_topics)


@pytest.fixture(scope="session")
def crds(infra: Infra) -> None:
    env = {**os.environ, "KUBECONFIG": infra["KUBECONFIG"]}
    kubectl = infra["PAYPLANE_KUBECTL"]
    subprocess.run(
        [kubectl, "apply", "-f", str(CRD_DIR)], env=env, check=True, capture_output=True, timeout=KUBECTL_TIMEOUT_S
    )
    names = [yaml.safe_load_all(path.read_text()) for path in sorted(CRD_DIR.glob("*.yaml"))]
    crd_names = [doc["metadata"]["name"] for docs in names for doc in docs]
    subprocess.run(
        [kubectl, "wait", "--for=condition=Established", "--timeout=60s", *[f"crd/{name}" for name in crd_names]],
        env=env,
        check=True,
        capture_output=True,
        timeout=KUBECTL_TIMEOUT_S + 10,
    )


def _force_delete_pods(core: client.CoreV1Api, namespace: str) -> None:
    for pod in core.list_namespaced_pod(namespace).items:
        try:
            core.delete_namespaced_pod(pod.metadata.name, namespace, grace_period_seconds=0)
        except ApiException as exc:
            if exc.status != 404:
                raise


@pytest.fixture(scope="module")
def cluster(
    infra: Infra, api: client.ApiClient, crds: None, run_id: str, request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    namespace = f"op-{run_id}"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        "kopf.dev",
        "v1",
        namespace,
        "kopfpeerings",
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "payplane-operator"}},
    )
    yield Cluster(infra=infra, api=api, namespace=namespace)
    core.delete_namespace(namespace)

    def gone() -> bool:
        _force_delete_pods(core, namespace)
        try:
            core.read_namespace(namespace)
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    wait_for(f"namespace {namespace} to be deleted", gone, timeout_s=NAMESPACE_GONE_S)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Operator:
    runner: KopfRunner
    liveness_url: str


@pytest.fixture(scope="module")
def operator(infra: Infra, cluster: Cluster) -> Iterator[Operator]:
    env = {
        "KUBECONFIG": infra["KUBECONFIG"],
        "KAFKA_BOOTSTRAP": infra["KAFKA_BOOTSTRAP"],
        "PAYPLANE_SPIRE_SERVER_SOCKET": infra["PAYPLANE_SPIRE_SERVER_SOCKET"],
        "PAYPLANE_SPIRE_TRUST_DOMAIN": infra["PAYPLANE_SPIRE_TRUST_DOMAIN"],
        "PAYPLANE_SPIRE_NODE_ID": infra["PAYPLANE_SPIRE_NODE_ID"],
        "PAYPLANE_IDENTITY_MODE": "local",
        "PAYPLANE_WORKLOAD_READINESS": "observed",
        "PAYPLANE_DRIFT_INTERVAL_S": str(DRIFT_S),
    }
    liveness = f"http://127.0.0.1:{_free_port()}/healthz"
    args = ["run", "--namespace", cluster.namespace, "--peering", "payplane-operator", "--liveness", liveness]
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        runner = KopfRunner(args, registry=build_registry(DRIFT_S), timeout=OPERATOR_STOP_S)
        with runner:
            try:
                yield Operator(runner=runner, liveness_url=liveness)
            finally:
                cluster.delete_all()
    if runner.exception is not None or runner.exit_code != 0:
        print(runner.output[-20000:])
    assert runner.exit_code == 0, runner.output[-5000:]
    assert runner.exception is None
