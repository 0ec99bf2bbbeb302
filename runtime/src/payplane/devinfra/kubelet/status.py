"""Pure: pod status from the state of its processes, the Node this kubelet registers, restart backoff."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

RESTART_BACKOFF_FIRST_S: Final = 1.0
RESTART_BACKOFF_MAX_S: Final = 60.0
# A container that ran this long without exiting starts its backoff from the beginning again.
RESTART_BACKOFF_RESET_S: Final = 60.0
# Room for far more pods than one machine runs: on an API server shared with other work, pods the
# scheduler binds here from namespaces this kubelet does not serve must never crowd its own out.
NODE_CAPACITY: Final = {"cpu": "64", "memory": "256Gi", "pods": "1000", "ephemeral-storage": "1Ti"}
CONTAINER_ID_SCHEME: Final = "process://"


@dataclass(frozen=True)
class Exit:
    exit_code: int
    started_at: str
    finished_at: str
    signal: int | None = None

    @property
    def reason(self) -> str:
        return "Completed" if self.exit_code == 0 else "Error"

    def as_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "exitCode": self.exit_code,
            "reason": self.reason,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
        }
        if self.signal is not None:
            state["signal"] = self.signal
        return state


@dataclass(frozen=True)
class ContainerView:
    """What the kubelet knows about one container at one instant."""

    name: str
    image: str
    pid: int | None  # running process, or None
    started_at: str | None  # of the running process
    ready: bool
    restart_count: int
    last_exit: Exit | None
    waiting_reason: str | None = None  # ContainerCreating, CrashLoopBackOff, CreateContainerConfigError
    waiting_message: str = ""
    finished: bool = False  # exited and will not be restarted (restartPolicy)

    def state(self) -> dict[str, Any]:
        if self.pid is not None:
            return {"running": {"startedAt": self.started_at}}
        if self.finished and self.last_exit is not None:
            return {"terminated": self.last_exit.as_state()}
        waiting: dict[str, Any] = {"reason": self.waiting_reason or "ContainerCreating"}
        if self.waiting_message:
            waiting["message"] = self.waiting_message
        return {"waiting": waiting}

    def as_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "ready": self.ready and self.pid is not None,
            "started": self.pid is not None,
            "restartCount": self.restart_count,
            "state": self.state(),
            "lastState": {"terminated": self.last_exit.as_state()} if self.last_exit and not self.finished else {},
        }
        if self.pid is not None:
            status["containerID"] = f"{CONTAINER_ID_SCHEME}{self.pid}"
        return status


def restart_wanted(restart_policy: str, exit_code: int) -> bool:
    return restart_policy == "Always" or (restart_policy == "OnFailure" and exit_code != 0)


def backoff_s(consecutive_failures: int) -> float:
    """1, 2, 4 … 60 s before the next start (Kubernetes starts at 10 s; 1 s suits local development)."""
    if consecutive_failures <= 0:
        return 0.0
    return float(min(RESTART_BACKOFF_FIRST_S * 2 ** (consecutive_failures - 1), RESTART_BACKOFF_MAX_S))


def pod_phase(containers: Sequence[ContainerView]) -> str:
    if containers and all(c.finished for c in containers):
        exits = [c.last_exit.exit_code if c.last_exit else 1 for c in containers]
        return "Succeeded" if all(code == 0 for code in exits) else "Failed"
    if any(c.pid is not None or c.last_exit is not None for c in containers):
        return "Running"
    return "Pending"


def _condition(
    kind: str, ok: bool, previous: Mapping[str, Mapping[str, Any]], now: str, reason: str = ""
) -> dict[str, Any]:
    status = "True" if ok else "False"
    before = previous.get(kind)
    changed_at = before.get("lastTransitionTime") if before and before.get("status") == status else now
    condition: dict[str, Any] = {"type": kind, "status": status, "lastProbeTime": None}
    condition["lastTransitionTime"] = changed_at or now
    if not ok and reason:
        condition["reason"] = reason
    return condition


def pod_status(
    pod: Mapping[str, Any], containers: Sequence[ContainerView], *, pod_ip: str, host_ip: str, start_time: str, now: str
) -> dict[str, Any]:
    """The pod's ``status`` as a kubelet reports it (conditions keep their transition times)."""
    previous = {c["type"]: c for c in (pod.get("status") or {}).get("conditions") or []}
    phase = pod_phase(containers)
    all_ready = bool(containers) and all(c.ready and c.pid is not None for c in containers)
    not_ready = [c.name for c in containers if not (c.ready and c.pid is not None)]
    reason = "ContainersNotReady" if not_ready else ""
    conditions = [
        _condition("PodReadyToStartContainers", True, previous, now),
        _condition("Initialized", True, previous, now),
        _condition("Ready", all_ready and phase == "Running", previous, now, reason),
        _condition("ContainersReady", all_ready, previous, now, reason),
        _condition("PodScheduled", True, previous, now),
    ]
    return {
        "phase": phase,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": start_time,
        "qosClass": (pod.get("status") or {}).get("qosClass", "Burstable"),
        "conditions": conditions,
        "containerStatuses": [c.as_status() for c in containers],
    }


def status_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether ``new`` says something ``old`` does not (transition times aside, they follow the status)."""
    if not old:
        return True
    return any(old.get(key) != value for key, value in new.items())


def node_object(name: str, host_ip: str, labels: Mapping[str, str]) -> dict[str, Any]:
    """The Node as first registered (status follows with ``node_status``)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "payplane.io/process-kubelet": "true",
                **labels,
            },
        },
        "spec": {},
    }


def node_status(host_ip: str, now: str, ready_since: str) -> dict[str, Any]:
    def condition(kind: str, status: str, reason: str, message: str) -> dict[str, Any]:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": ready_since,
        }

    return {
        "capacity": NODE_CAPACITY,
        "allocatable": NODE_CAPACITY,
        "addresses": [{"type": "InternalIP", "address": host_ip}, {"type": "Hostname", "address": host_ip}],
        "conditions": [
            condition("Ready", "True", "KubeletReady", "payplane process kubelet is posting ready status"),
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "process kubelet"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "process kubelet"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "process kubelet"),
        ],
        "nodeInfo": {
            "architecture": "amd64",
            "operatingSystem": "linux",
            "kubeletVersion": "payplane-process-kubelet",
            "kubeProxyVersion": "",
            "containerRuntimeVersion": "process://local",
            "osImage": "",
            "kernelVersion": "",
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
        },
    }
