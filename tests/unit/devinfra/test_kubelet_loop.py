"""The kubelet loop against an in-memory API: admit, run, report, refuse a bad pod, terminate, delete.

Processes are real (``python -c``); the API, the interface addresses and the group switch are fakes.
"""

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from payplane.devinfra.kubelet import netaddr, processes
from payplane.devinfra.kubelet.kubeapi import KubeApiError
from payplane.devinfra.kubelet.node import KubeletSettings, ProcessKubelet

WAIT_S = 10.0


class FakeApi:
    def __init__(self) -> None:
        self.pods: dict[str, dict[str, Any]] = {}
        self.secrets: list[dict[str, Any]] = []
        self.calls: list[tuple[str, str, Any]] = []

    def items(self, path: str, **query: str) -> list[dict[str, Any]]:
        if path.endswith("/pods"):
            assert query == {"fieldSelector": "spec.nodeName=n1"}
            return list(self.pods.values())
        if path.endswith("/secrets"):
            return self.secrets
        return []

    def get(self, path: str, **query: str) -> dict[str, Any]:
        return {"metadata": {"uid": "node-uid"}}

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("POST", path, body))
        return body

    def patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("PATCH", path, body))
        if "/leases/" in path and not any(m == "POST" and "/leases" in p for m, p, _ in self.calls):
            raise KubeApiError("PATCH", path, 404, "no lease yet")
        name = path.rsplit("/pods/", maxsplit=1)[-1].removesuffix("/status") if "/pods/" in path else None
        if name is not None:
            if name not in self.pods:
                raise KubeApiError("PATCH", path, 404, "gone")
            self.pods[name]["status"] = body["status"]
        return body

    def delete(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        self.calls.append(("DELETE", path, body))
        self.pods.pop(path.rsplit("/", 1)[-1], None)
        return {}


def pod(name: str, code: str, env: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    container = {"name": "app", "command": ["python", "-c", code], "env": env or []}
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}"},
        "spec": {"nodeName": "n1", "serviceAccountName": "sa", "containers": [container]},
        "status": {},
    }


@pytest.fixture
def kubelet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ProcessKubelet:
    on_interface: set[str] = set()
    monkeypatch.setattr(netaddr, "add", on_interface.add)
    monkeypatch.setattr(netaddr, "remove", on_interface.discard)
    monkeypatch.setattr(netaddr, "addresses_in", lambda network: sorted(on_interface))
    monkeypatch.setattr(processes, "spawn_identity", lambda gid: {})  # no root needed here
    settings = KubeletSettings(
        node_name="n1",
        kubeconfig="unused",
        kubelet_dir=tmp_path,
        trust_domain="payplane.test",
        spire_agent_socket=tmp_path / "agent.sock",
        namespaces=("ns",),
    )
    kubelet = ProcessKubelet(settings, api=FakeApi())  # type: ignore[arg-type]
    kubelet.node = dataclasses.replace(kubelet.node, executables={"python": sys.executable})
    return kubelet


def sync_until(kubelet: ProcessKubelet, done: Any) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        kubelet.sync_once()
        if done():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def test_a_pod_runs_reports_ready_and_is_deleted_after_its_processes_stop(kubelet: ProcessKubelet) -> None:
    api: FakeApi = kubelet.api  # type: ignore[assignment]
    api.pods["web"] = pod("web", "import time; time.sleep(60)")
    kubelet.prepare()
    try:
        sync_until(kubelet, lambda: api.pods["web"]["status"].get("phase") == "Running")
        status = api.pods["web"]["status"]
        assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
        pid = int(status["containerStatuses"][0]["containerID"].removeprefix("process://"))
        assert Path(f"/proc/{pid}").exists()
        patches = len([c for c in api.calls if c[0] == "PATCH" and "/pods/" in c[1]])
        kubelet.sync_once()
        assert len([c for c in api.calls if c[0] == "PATCH" and "/pods/" in c[1]]) == patches  # nothing new
        api.pods["web"]["metadata"]["deletionTimestamp"] = "2026-11-22T10:00:00Z"
        api.pods["web"]["metadata"]["deletionGracePeriodSeconds"] = 5
        sync_until(kubelet, lambda: "web" not in api.pods)
        deletes = [c for c in api.calls if c[0] == "DELETE"]
        assert deletes[-1][2]["preconditions"] == {"uid": "uid-web"}
        assert deletes[-1][2]["gracePeriodSeconds"] == 0
        assert not Path(f"/proc/{pid}").exists()
        assert kubelet.pods == {}
    finally:
        kubelet.shutdown(bound_s=5)


def test_a_missing_secret_leaves_the_pod_waiting_with_the_reason(kubelet: ProcessKubelet) -> None:
    api: FakeApi = kubelet.api  # type: ignore[assignment]
    env = [{"name": "DSN", "valueFrom": {"secretKeyRef": {"name": "db", "key": "dsn"}}}]
    api.pods["bad"] = pod("bad", "pass", env)
    kubelet.prepare()
    try:
        sync_until(kubelet, lambda: bool(api.pods["bad"]["status"].get("containerStatuses")))
        (container,) = api.pods["bad"]["status"]["containerStatuses"]
        assert container["state"]["waiting"]["reason"] == "CreateContainerConfigError"
        assert 'secret "db" not found' in container["state"]["waiting"]["message"]
        assert api.pods["bad"]["status"]["phase"] == "Pending"
        api.secrets.append({"metadata": {"name": "db"}, "stringData": {"dsn": "postgresql://x"}})
        sync_until(kubelet, lambda: api.pods["bad"]["status"]["containerStatuses"][0]["restartCount"] >= 1)
    finally:
        kubelet.shutdown(bound_s=5)


def test_the_node_is_registered_ready_with_a_lease_it_owns(kubelet: ProcessKubelet) -> None:
    api: FakeApi = kubelet.api  # type: ignore[assignment]
    kubelet.prepare()
    try:
        created = {path: body for method, path, body in api.calls if method == "POST"}
        assert created["/api/v1/nodes"]["metadata"]["name"] == "n1"
        status = next(b for m, p, b in api.calls if m == "PATCH" and p == "/api/v1/nodes/n1/status")["status"]
        assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
        lease = created["/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"]
        assert lease["metadata"]["ownerReferences"][0] == {
            "apiVersion": "v1",
            "kind": "Node",
            "name": "n1",
            "uid": "node-uid",
        }
        assert lease["spec"]["holderIdentity"] == "n1"
        assert (kubelet.node.spiffe_dir / "spire-agent.sock").is_symlink()
    finally:
        kubelet.shutdown(bound_s=5)


def test_pods_of_other_namespaces_are_not_run_but_their_deletion_is_finished(kubelet: ProcessKubelet) -> None:
    api: FakeApi = kubelet.api  # type: ignore[assignment]
    stranger = pod("stranger", "import time; time.sleep(60)")
    stranger["metadata"]["namespace"] = "elsewhere"
    leaving = pod("leaving", "pass")
    leaving["metadata"] |= {"namespace": "elsewhere", "deletionTimestamp": "2026-11-22T10:00:00Z"}
    api.pods |= {"stranger": stranger, "leaving": leaving}
    kubelet.prepare()
    try:
        kubelet.sync_once()
        assert "leaving" not in api.pods
        assert api.pods["stranger"]["status"] == {}  # never reported, never run
        assert kubelet.pods == {}
    finally:
        kubelet.shutdown(bound_s=5)
