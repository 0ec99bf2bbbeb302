"""The kubelet loop: keep the Node Ready, run the pods bound to it, report their status.

Level-based, one pass every ``sync_interval_s``: list the pods bound to this node (in the watched
namespaces), the ConfigMaps and Secrets of those namespaces and every EndpointSlice; then for each pod
make the processes match (start, restart with backoff, stop on deletion with the grace period, then
delete the pod object as a kubelet does) and patch its status when it changed.
"""

import base64
import contextlib
import datetime
import ipaddress
import logging
import os
import sys
import threading
import time
import zlib
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from payplane.devinfra.kubelet import dns, netaddr, podspec, probes
from payplane.devinfra.kubelet.kubeapi import KubeApi, KubeApiError
from payplane.devinfra.kubelet.processes import ContainerRuntime, reap_orphans, rfc3339
from payplane.devinfra.kubelet.status import node_object, node_status, pod_status

log = logging.getLogger("payplane.kubelet")

DEFAULT_POD_CIDR: Final = "198.18.0.0/16"
DEFAULT_GRACE_S: Final = 30.0
SHUTDOWN_BOUND_S: Final = 40.0
LEASE_DURATION_S: Final = 40
LEASE_NAMESPACE: Final = "kube-node-lease"
SPIFFE_DIR_NAME: Final = "spiffe"
PROBE_WORKERS: Final = 4
ADDRESS_RECORD: Final = "address"  # in the pod's directory: the address this kubelet put on the interface


@dataclass(frozen=True)
class KubeletSettings:
    node_name: str
    kubeconfig: str
    kubelet_dir: Path  # pods/<namespace>_<name>_<uid>/ (logs, pid records, volumes), spiffe/
    trust_domain: str
    spire_agent_socket: Path
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    pod_cidr: str = DEFAULT_POD_CIDR
    host_ip: str = "127.0.0.1"
    dns_port: int = 0
    sync_interval_s: float = 1.0
    heartbeat_interval_s: float = 10.0

    @property
    def pods_dir(self) -> Path:
        return self.kubelet_dir / "pods"


def allocate_ip(network: ipaddress.IPv4Network, uid: str, used: set[str], preferred: str | None = None) -> str:
    """A stable address for a pod: the one it already reports if free, else one derived from its uid."""
    if preferred and ipaddress.IPv4Address(preferred) in network and preferred not in used:
        return preferred
    hosts = network.num_addresses - 2
    start = zlib.crc32(uid.encode()) % hosts
    for step in range(hosts):
        candidate = str(network[1 + (start + step) % hosts])
        if candidate not in used:
            return candidate
    raise RuntimeError(f"no free pod address left in {network}")


def decode_secret(secret: Mapping[str, Any]) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode(errors="replace") for k, v in (secret.get("data") or {}).items()}
    return {**data, **(secret.get("stringData") or {})}


def materialise(pod_dir: Path, plans: Iterable[podspec.VolumePlan]) -> None:
    """Write ConfigMap and Secret volumes (only files whose content changed; stale ones removed)."""
    for plan in plans:
        if plan.host_path is not None:
            continue
        directory = podspec.volume_dir(pod_dir, plan)
        directory.mkdir(parents=True, exist_ok=True)
        for existing in directory.iterdir():
            if existing.name not in plan.files and existing.is_file() and not existing.name.startswith(".tmp-"):
                existing.unlink()
        for relative, content in plan.files.items():
            target = directory / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists() and target.read_bytes() == content:
                continue
            temporary = target.with_name(f".tmp-{target.name}")
            temporary.write_bytes(content)
            temporary.replace(target)


def _stop_all(containers: Iterable[ContainerRuntime], grace_s: float, now_mono_s: float) -> bool:
    """Advance the stop of every container (none skipped); True once none runs."""
    stopped = [container.stop(grace_s, now_mono_s) for container in containers]
    return all(stopped)


@dataclass
class PodRuntime:
    uid: str
    namespace: str
    name: str
    pod_ip: str
    pod_dir: Path
    start_time: str
    containers: dict[str, ContainerRuntime] = field(default_factory=dict)
    last_status: dict[str, Any] | None = None
    probes: dict[str, Future[bool]] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{self.name}"


class ProcessKubelet:
    def __init__(self, settings: KubeletSettings, api: KubeApi | None = None) -> None:
        self.settings = settings
        self.api = api or KubeApi(settings.kubeconfig)
        self.network = ipaddress.IPv4Network(settings.pod_cidr)
        self.resolver = dns.ServiceResolver("127.0.0.1", settings.dns_port)
        self.pods: dict[str, PodRuntime] = {}
        self.objects: dict[str, podspec.PodObjects] = {}
        self._next_heartbeat_s = 0.0
        self._ready_since = rfc3339()
        self._probe_pool = ThreadPoolExecutor(PROBE_WORKERS, thread_name_prefix="probe")
        bin_dir = Path(sys.executable).parent
        payplane = str(bin_dir / "payplane")
        self.node = podspec.NodeSettings(
            node_name=settings.node_name,
            host_ip=settings.host_ip,
            trust_domain=settings.trust_domain,
            spiffe_dir=settings.kubelet_dir / SPIFFE_DIR_NAME,
            dns_authority=self.resolver.authority,
            entrypoint=(payplane,),
            executables={"payplane": payplane, "python": sys.executable, "python3": sys.executable},
            base_env={
                "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/local/bin:/usr/bin:/bin')}",
                "HOME": os.environ.get("HOME", "/root"),
                "LANG": "C.UTF-8",
                "PYTHONUNBUFFERED": "1",
            },
        )

    # --- start and stop -------------------------------------------------------------------------

    def prepare(self) -> None:
        """Reap processes a previous kubelet left, link the SPIRE socket, register the Node, serve DNS."""
        self.settings.pods_dir.mkdir(parents=True, exist_ok=True)
        reaped = reap_orphans(self.settings.pods_dir)
        if reaped:
            log.info("stopped %d processes left by a previous kubelet: %s", len(reaped), reaped)
        spiffe_dir = self.node.spiffe_dir
        spiffe_dir.mkdir(parents=True, exist_ok=True)
        link = spiffe_dir / podspec.SPIFFE_CSI_SOCKET_NAME
        link.unlink(missing_ok=True)
        link.symlink_to(self.settings.spire_agent_socket)
        for record in self.settings.pods_dir.glob(f"*/{ADDRESS_RECORD}"):  # this node's, from a previous run
            netaddr.remove(record.read_text().strip())  # re-added when its pod is admitted again
            record.unlink()
        self.register_node()
        self.resolver.start()
        log.info("node %s registered; Service resolver on %s", self.settings.node_name, self.resolver.authority)

    def run(self, stopping: threading.Event) -> None:
        self.prepare()
        try:
            while not stopping.is_set():
                started_s = time.monotonic()
                try:
                    self.sync_once()
                except KubeApiError as exc:
                    log.warning("sync failed (retrying): %s", exc)
                except Exception:  # the kubelet outlives any one bad pass; logged with its trace
                    log.exception("sync failed (retrying)")
                stopping.wait(max(0.0, self.settings.sync_interval_s - (time.monotonic() - started_s)))
        finally:
            self.shutdown()

    def shutdown(self, bound_s: float = SHUTDOWN_BOUND_S) -> None:
        """Stop every process (SIGTERM, each pod's grace within ``bound_s``, then SIGKILL)."""
        deadline = time.monotonic() + bound_s
        log.info("stopping: the processes of %d pods (SIGTERM, then SIGKILL within %.0f s)", len(self.pods), bound_s)
        while self.pods and time.monotonic() < deadline + 5:
            now = time.monotonic()
            for uid, runtime in list(self.pods.items()):
                grace_s = max(0.0, min(DEFAULT_GRACE_S, deadline - now))
                if _stop_all(runtime.containers.values(), grace_s, now):
                    self._forget(uid)
            time.sleep(0.1)
        self.resolver.stop()
        self._probe_pool.shutdown(wait=False, cancel_futures=True)

    # --- the node -------------------------------------------------------------------------------

    def register_node(self) -> None:
        name = self.settings.node_name
        try:
            self.api.create("/api/v1/nodes", node_object(name, self.settings.host_ip, {}))
        except KubeApiError as exc:
            if exc.status != 409:
                raise
        self.heartbeat(force=True)

    def heartbeat(self, force: bool = False) -> None:
        now_s = time.monotonic()
        if not force and now_s < self._next_heartbeat_s:
            return
        self._next_heartbeat_s = now_s + self.settings.heartbeat_interval_s
        name = self.settings.node_name
        status = node_status(self.settings.host_ip, rfc3339(), self._ready_since)
        self.api.patch(f"/api/v1/nodes/{name}/status", {"status": status})
        renew = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        lease_path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{name}"
        spec = {"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION_S, "renewTime": renew}
        try:
            self.api.patch(lease_path, {"spec": spec})
        except KubeApiError as exc:
            if exc.status != 404:
                raise
            node_uid = self.api.get(f"/api/v1/nodes/{name}")["metadata"]["uid"]
            owner = {"apiVersion": "v1", "kind": "Node", "name": name, "uid": node_uid}  # goes with the Node
            lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": spec}
            lease["metadata"] = {"name": name, "ownerReferences": [owner]}
            self.api.create(f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases", lease)

    # --- one pass -------------------------------------------------------------------------------

    def list_pods(self) -> list[dict[str, Any]]:
        """The pods this kubelet runs; pods of other namespaces bound here only get their deletion finished
        (nothing of theirs runs here, and a deletion nobody confirms would hold their namespace forever)."""
        bound = self.api.items("/api/v1/pods", fieldSelector=f"spec.nodeName={self.settings.node_name}")
        if not self.settings.namespaces:
            return bound
        ours = [p for p in bound if p["metadata"]["namespace"] in self.settings.namespaces]
        for pod in bound:
            meta = pod["metadata"]
            if meta["namespace"] not in self.settings.namespaces and meta.get("deletionTimestamp"):
                with contextlib.suppress(KubeApiError):
                    self._delete_pod_object(meta)
        return ours

    def load_objects(self, namespaces: set[str]) -> None:
        self.objects = {}
        for namespace in namespaces:
            config_maps = self.api.items(f"/api/v1/namespaces/{namespace}/configmaps")
            secrets = self.api.items(f"/api/v1/namespaces/{namespace}/secrets")
            self.objects[namespace] = podspec.PodObjects(
                config_maps={c["metadata"]["name"]: dict(c.get("data") or {}) for c in config_maps},
                secrets={s["metadata"]["name"]: decode_secret(s) for s in secrets},
            )

    def refresh_services(self) -> None:
        slices = self.api.items("/apis/discovery.k8s.io/v1/endpointslices")
        self.resolver.update(dns.records_from_slices(slices))

    def sync_once(self) -> None:
        self.heartbeat()
        pods = self.list_pods()
        self.load_objects({p["metadata"]["namespace"] for p in pods})
        self.refresh_services()
        seen = set()
        for pod in pods:
            seen.add(pod["metadata"]["uid"])
            try:
                self.sync_pod(pod)
            except KubeApiError as exc:
                if exc.status not in (404, 409):  # gone or changed meanwhile: the next pass sees it
                    log.warning("pod %s/%s: %s", pod["metadata"]["namespace"], pod["metadata"]["name"], exc)
            except (OSError, netaddr.AddressError, ValueError) as exc:  # one pod's trouble stops no other pod
                log.warning("pod %s/%s: %s", pod["metadata"]["namespace"], pod["metadata"]["name"], exc)
        now = time.monotonic()
        for uid in [uid for uid in self.pods if uid not in seen]:  # removed without a graceful deletion
            if _stop_all(self.pods[uid].containers.values(), 0.0, now):
                self._forget(uid)

    def _forget(self, uid: str) -> None:
        runtime = self.pods.pop(uid)
        netaddr.remove(runtime.pod_ip)
        (runtime.pod_dir / ADDRESS_RECORD).unlink(missing_ok=True)

    def _runtime_for(self, pod: dict[str, Any]) -> PodRuntime:
        meta, status = pod["metadata"], pod.get("status") or {}
        uid = meta["uid"]
        if uid in self.pods:
            return self.pods[uid]
        # other kubelets on this machine may share the range: every address on the interface is taken
        used = {r.pod_ip for r in self.pods.values()} | set(netaddr.addresses_in(self.network))
        pod_ip = allocate_ip(self.network, uid, used, status.get("podIP"))
        netaddr.add(pod_ip)
        pod_dir = self.settings.pods_dir / f"{meta['namespace']}_{meta['name']}_{uid}"
        start_time = status.get("startTime") or rfc3339()
        runtime = PodRuntime(uid, meta["namespace"], meta["name"], pod_ip, pod_dir, start_time)
        pod_dir.mkdir(parents=True, exist_ok=True)
        (pod_dir / ADDRESS_RECORD).write_text(f"{pod_ip}\n")
        previous = {c["name"]: c for c in status.get("containerStatuses") or []}
        policy = pod["spec"].get("restartPolicy", "Always")
        for container in pod["spec"].get("containers") or []:
            before = previous.get(container["name"], {})
            runtime.containers[container["name"]] = ContainerRuntime(
                name=container["name"],
                image=container.get("image", ""),
                pod_dir=pod_dir,
                restart_policy=policy,
                restart_count=int(before.get("restartCount", 0)),
                count_first_start=bool(before.get("containerID")),
            )
        self.pods[uid] = runtime
        log.info("pod %s/%s admitted: %s", runtime.namespace, runtime.name, pod_ip)
        return runtime

    def sync_pod(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        if uid not in self.pods and (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return
        if meta.get("deletionTimestamp"):
            self._terminate(pod)
            return
        runtime = self._runtime_for(pod)
        now = time.monotonic()
        objects = self.objects.get(runtime.namespace, podspec.PodObjects())
        try:
            plans = podspec.volume_plans(pod, objects, self.node.spiffe_dir)
            materialise(runtime.pod_dir, plans)
            specs = {
                s.container: s
                for s in podspec.process_specs(pod, objects, self.node, pod_ip=runtime.pod_ip, pod_dir=runtime.pod_dir)
            }
            error = None
        except podspec.PodConfigError as exc:
            specs, error = {}, str(exc)
        for name, container in runtime.containers.items():
            container.poll(now)
            spec = specs.get(name)
            if spec is None:
                container.config_error = error or f"container {name} has no process specification"
                continue
            if container.due_to_start(now):
                try:
                    container.start(spec)
                    log.info("started %s/%s %s: pid %s", runtime.namespace, runtime.name, name, container.popen.pid)  # type: ignore[union-attr]
                except (OSError, podspec.PodConfigError, ValueError) as exc:
                    container.config_error = f"starting {spec.argv[0]}: {exc}"
                    container.last_exit = None
                    container.next_start_mono_s = now + 5.0
                except Exception as exc:  # noqa: BLE001 - spawn_identity's InfraError and friends
                    container.config_error = str(exc)
                    container.next_start_mono_s = now + 5.0
            self._update_readiness(runtime, container, spec, now)
        self._report(pod, runtime, now)

    def _update_readiness(
        self, runtime: PodRuntime, container: ContainerRuntime, spec: podspec.ProcessSpec, now: float
    ) -> None:
        if not container.running:
            container.ready = False
            return
        probe = spec.readiness_probe
        if probe is None:
            container.ready = True
            return
        pending = runtime.probes.get(container.name)
        if pending is not None and pending.done():
            del runtime.probes[container.name]
            if pending.result():
                container.probe_successes, container.probe_failures = container.probe_successes + 1, 0
                if container.probe_successes >= int(probe.get("successThreshold") or 1):
                    container.ready = True
            else:
                container.probe_failures, container.probe_successes = container.probe_failures + 1, 0
                if container.probe_failures >= int(probe.get("failureThreshold") or 3) or not container.ready:
                    container.ready = False
        started_for_s = now - container.started_mono_s
        due = now >= container.next_probe_mono_s and started_for_s >= float(probe.get("initialDelaySeconds") or 0)
        if container.name not in runtime.probes and due:
            container.next_probe_mono_s = now + float(probe.get("periodSeconds") or 10)
            runtime.probes[container.name] = self._probe_pool.submit(
                probes.run_probe, probe, runtime.pod_ip, spec.ports
            )

    def _report(self, pod: dict[str, Any], runtime: PodRuntime, now: float) -> None:
        views = [c.view(now) for c in runtime.containers.values()]
        status = pod_status(
            pod,
            views,
            pod_ip=runtime.pod_ip,
            host_ip=self.settings.host_ip,
            start_time=runtime.start_time,
            now=rfc3339(),
        )
        if status == runtime.last_status:
            return
        self.api.patch(f"{runtime.path}/status", {"status": status})
        runtime.last_status = status

    def _terminate(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        runtime = self.pods.get(meta["uid"])
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = pod["spec"].get("terminationGracePeriodSeconds", DEFAULT_GRACE_S)
        grace_s = float(grace)
        if runtime is not None:
            now = time.monotonic()
            if not _stop_all(runtime.containers.values(), grace_s, now):
                return
            self._forget(meta["uid"])
            log.info("pod %s/%s stopped", meta["namespace"], meta["name"])
        self._delete_pod_object(meta)

    def _delete_pod_object(self, meta: Mapping[str, Any]) -> None:
        """What a kubelet does once a pod's containers are gone: delete the object for good (grace 0)."""
        body = {"kind": "DeleteOptions", "gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}}
        self.api.delete(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", body)
