"""The real control plane the operator runs against: CRDs with a status subresource, watches, validation,
and Deployment → ReplicaSet → Pods bound to a Node by the scheduler (there is no kubelet: pods never run).

Everything a test creates carries this run's id and is removed afterwards; every wait is bounded.
"""

import datetime
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from payplane.devinfra import versions
from tests.integration.conftest import Infra

WAIT_S = 60.0
POLL_S = 0.25
WATCH_S = 30
KUBECTL_TIMEOUT_S = 30.0
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float = WAIT_S) -> T:
    """Poll ``probe`` until it returns something truthy; fail the test (naming ``what``) at the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(POLL_S)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _not_found(call: Callable[[], object]) -> bool:
    try:
        call()
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


@pytest.fixture(scope="module")
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture(scope="module")
def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def _force_delete_pods(core: client.CoreV1Api, namespace: str) -> None:
    """No kubelet confirms graceful deletion here, so pods are removed with a zero grace period."""
    for pod in core.list_namespaced_pod(namespace).items:
        try:
            core.delete_namespaced_pod(pod.metadata.name, namespace, grace_period_seconds=0)
        except ApiException as exc:
            if exc.status != 404:
                raise


def _namespace_gone(core: client.CoreV1Api, name: str) -> bool:
    _force_delete_pods(core, name)
    return _not_found(lambda: core.read_namespace(name))


@pytest.fixture(scope="module")
def namespace(core: client.CoreV1Api, run_id: str) -> Iterator[str]:
    name = f"it-kube-{run_id}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)
    # the namespace controller (in kube-controller-manager) empties and then removes it
    wait_for(f"namespace {name} to be deleted", lambda: _namespace_gone(core, name))


@dataclass(frozen=True)
class Crd:
    group: str
    version: str
    plural: str
    kind: str

    @property
    def name(self) -> str:
        return f"{self.plural}.{self.group}"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


def _crd_manifest(crd: Crd) -> dict[str, Any]:
    spec_schema = {
        "type": "object",
        "properties": {
            "replicas": {"type": "integer", "minimum": 0},
            "currency": {"type": "string"},
        },
    }
    status_schema = {
        "type": "object",
        "properties": {
            "phase": {"type": "string"},
            "observedGeneration": {"type": "integer"},
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": crd.name},
        "spec": {
            "group": crd.group,
            "scope": "Namespaced",
            "names": {"plural": crd.plural, "singular": crd.kind.lower(), "kind": crd.kind},
            "versions": [
                {
                    "name": crd.version,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def _established(api: client.ApiextensionsV1Api, name: str) -> bool:
    conditions = api.read_custom_resource_definition(name).status.conditions or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


@pytest.fixture(scope="module")
def crd(api: client.ApiClient, run_id: str) -> Iterator[Crd]:
    extensions = client.ApiextensionsV1Api(api)
    definition = Crd(group=f"it{run_id}.payplane.test", version="v1", plural="widgets", kind="Widget")
    extensions.create_custom_resource_definition(_crd_manifest(definition))
    wait_for(f"CRD {definition.name} to be established", lambda: _established(extensions, definition.name))
    yield definition
    extensions.delete_custom_resource_definition(definition.name)
    wait_for(
        f"CRD {definition.name} to be deleted",
        lambda: _not_found(lambda: extensions.read_custom_resource_definition(definition.name)),
    )


def test_apiserver_and_kubectl_run_the_pinned_version(api: client.ApiClient, infra: Infra) -> None:
    assert client.VersionApi(api).get_code().git_version == versions.KUBERNETES
    result = subprocess.run(
        [infra["PAYPLANE_KUBECTL"], "get", "--raw", "/readyz"],
        env={"KUBECONFIG": infra["KUBECONFIG"]},
        capture_output=True,
        text=True,
        timeout=KUBECTL_TIMEOUT_S,
        check=True,
    )
    assert result.stdout.strip() == "ok"


def test_admin_is_authorized_by_rbac_for_everything(api: client.ApiClient) -> None:
    review = client.V1SelfSubjectAccessReview(
        spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(verb="*", group="*", resource="*"),
        )
    )
    answer = client.AuthorizationV1Api(api).create_self_subject_access_review(review)
    assert answer.status.allowed


def _widget(crd: Crd, name: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": crd.api_version,
        "kind": crd.kind,
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "currency": "EUR"},
    }


def _collect_events(
    custom: client.CustomObjectsApi, crd: Crd, namespace: str, name: str, since_resource_version: str, count: int
) -> list[tuple[str, dict[str, Any]]]:
    """Replay the watch from ``since_resource_version`` until ``count`` events for ``name`` arrived."""
    events: list[tuple[str, dict[str, Any]]] = []
    watcher = watch.Watch()
    for event in watcher.stream(
        custom.list_namespaced_custom_object,
        crd.group,
        crd.version,
        namespace,
        crd.plural,
        resource_version=since_resource_version,
        timeout_seconds=WATCH_S,
        _request_timeout=WATCH_S + 5,
    ):
        if event["object"]["metadata"]["name"] == name:
            events.append((event["type"], event["object"]))
        if len(events) >= count:
            watcher.stop()
    return events


def test_custom_object_spec_and_status_are_separate_and_watched(
    custom: client.CustomObjectsApi,
    crd: Crd,
    namespace: str,
) -> None:
    args = (crd.group, crd.version, namespace, crd.plural)
    name = "w1"
    start_rv = custom.list_namespaced_custom_object(*args)["metadata"]["resourceVersion"]

    created = custom.create_namespaced_custom_object(*args, _widget(crd, name, replicas=1))
    assert created["metadata"]["generation"] == 1

    # through the main resource: the spec changes, the status in the same patch is ignored
    spec_patched = custom.patch_namespaced_custom_object(
        *args,
        name,
        {"spec": {"replicas": 2}, "status": {"phase": "Forged"}},
    )
    assert spec_patched["spec"]["replicas"] == 2
    assert "status" not in spec_patched
    assert spec_patched["metadata"]["generation"] == 2

    # through /status: the status changes, the spec in the same patch is ignored, generation stays
    status_patched = custom.patch_namespaced_custom_object_status(
        *args,
        name,
        {"status": {"phase": "Ready", "observedGeneration": 2}, "spec": {"replicas": 99}},
    )
    assert status_patched["status"] == {"phase": "Ready", "observedGeneration": 2}
    assert status_patched["spec"]["replicas"] == 2
    assert status_patched["metadata"]["generation"] == 2

    # a later spec patch leaves the status alone
    respecced = custom.patch_namespaced_custom_object(*args, name, {"spec": {"currency": "USD"}})
    assert respecced["status"] == {"phase": "Ready", "observedGeneration": 2}
    assert respecced["metadata"]["generation"] == 3

    events = _collect_events(custom, crd, namespace, name, start_rv, count=4)
    assert [kind for kind, _ in events] == ["ADDED", "MODIFIED", "MODIFIED", "MODIFIED"]
    assert events[0][1]["spec"]["replicas"] == 1
    assert events[1][1]["spec"]["replicas"] == 2
    assert events[2][1]["status"]["phase"] == "Ready"
    assert events[3][1]["spec"]["currency"] == "USD"


def test_invalid_custom_object_is_refused_naming_the_field(
    custom: client.CustomObjectsApi,
    crd: Crd,
    namespace: str,
) -> None:
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object(
            crd.group,
            crd.version,
            namespace,
            crd.plural,
            _widget(crd, "bad", replicas=-1),
        )
    assert refused.value.status == 422
    assert "spec.replicas" in str(refused.value.body)


def _fake_node(name: str) -> client.V1Node:
    """A Node as a kubelet would register it: Ready, with room for pods. Nothing runs on it."""
    now = datetime.datetime.now(datetime.UTC)
    resources = {"cpu": "4", "memory": "8Gi", "pods": "110"}
    return client.V1Node(
        metadata=client.V1ObjectMeta(name=name, labels={"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}),
        status=client.V1NodeStatus(
            capacity=resources,
            allocatable=resources,
            conditions=[
                client.V1NodeCondition(
                    type="Ready",
                    status="True",
                    reason="KubeletReady",
                    message="fake node for tests",
                    last_heartbeat_time=now,
                    last_transition_time=now,
                )
            ],
        ),
    )


@pytest.fixture
def node(core: client.CoreV1Api, run_id: str) -> Iterator[str]:
    name = f"it-node-{run_id}"
    core.create_node(_fake_node(name))
    yield name
    core.delete_node(name)
    wait_for(f"node {name} to be deleted", lambda: _not_found(lambda: core.read_node(name)))


def _deployment(name: str, node_name: str, replicas: int) -> client.V1Deployment:
    labels = {"app": name}
    # Without heartbeats the node lifecycle controller taints the node unreachable after its grace
    # period; tolerating that keeps scheduling independent of how long the test takes to get here.
    tolerations = [
        client.V1Toleration(key=key, operator="Exists")
        for key in ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")
    ]
    pod_spec = client.V1PodSpec(
        containers=[client.V1Container(name="app", image="payplane.invalid/never-pulled:1")],
        node_selector={"kubernetes.io/hostname": node_name},
        tolerations=tolerations,
    )
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels=labels), spec=pod_spec),
        ),
    )


def _owned_by(obj: Any, kind: str, name: str) -> bool:
    return any(ref.kind == kind and ref.name == name for ref in obj.metadata.owner_references or [])


def test_deployment_gets_a_replicaset_and_pods_bound_to_the_node(
    api: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    node: str,
) -> None:
    apps = client.AppsV1Api(api)
    name = "web"
    replicas = 2
    apps.create_namespaced_deployment(namespace, _deployment(name, node, replicas))

    def replicaset() -> Any:
        found = [rs for rs in apps.list_namespaced_replica_set(namespace).items if _owned_by(rs, "Deployment", name)]
        return found[0] if found else None

    replica_set = wait_for("the deployment controller to create a ReplicaSet", replicaset)

    def bound_pods() -> list[Any] | None:
        pods = [
            pod
            for pod in core.list_namespaced_pod(namespace).items
            if _owned_by(pod, "ReplicaSet", replica_set.metadata.name)
        ]
        if len(pods) == replicas and all(pod.spec.node_name for pod in pods):
            return pods
        return None

    pods = wait_for(f"{replicas} pods bound to node {node} by the scheduler", bound_pods)
    for pod in pods:
        assert pod.spec.node_name == node
        # ServiceAccount admission ran: the default account (made by the controller-manager) is mounted
        assert pod.spec.service_account_name == "default"
        assert any(volume.name.startswith("kube-api-access-") for volume in pod.spec.volumes)
        scheduled = [c for c in pod.status.conditions or [] if c.type == "PodScheduled"]
        assert scheduled
        assert scheduled[0].status == "True"

    apps.delete_namespaced_deployment(name, namespace)
    _force_delete_pods(core, namespace)
