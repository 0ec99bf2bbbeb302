"""Pure: a pod (as the API server returns it) → the local processes that run its containers.

Kubernetes semantics kept: ``command`` replaces the image's entry point and ``args`` its arguments;
``envFrom`` first, then ``env`` in order, ``$(VAR)`` expanding earlier variables (``$$`` escapes);
``valueFrom`` from ConfigMaps, Secrets and the pod's own fields; a missing object or key is a
``CreateContainerConfigError`` unless marked optional.

Local translations (documented in docs/development.md): the image is ignored and its entry point is
``payplane`` from the project's environment; a volume becomes a per-pod directory, and an environment
value or argument naming a path under a container ``mountPath`` is rewritten to that directory; the
SPIFFE CSI volume is a node directory holding a link to the SPIRE agent's socket; a container's CPU
request becomes its process's nice value (``niceness_for_cpu_request``: the relative CPU weight a cgroup
would give it); gRPC ``dns:///``
targets are pointed at the kubelet's Service resolver; each process runs with the primary gid of its pod's SPIFFE ID
(``spiffe://<td>/ns/<namespace>/sa/<serviceAccountName>``), so SPIRE's ``unix:gid`` selectors (the
operator's local identity mode) attest it.
"""

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from payplane_contracts.identity import SpiffeId, local_gid

SPIFFE_CSI_DRIVER: Final = "csi.spiffe.io"
# The socket's name inside the directory the SPIFFE CSI driver publishes (the SPIRE chart's name).
SPIFFE_CSI_SOCKET_NAME: Final = "spire-agent.sock"
GRPC_DNS_PREFIX: Final = "dns:///"
CONFIG_ERROR: Final = "CreateContainerConfigError"
_VAR_RE: Final = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")
_FIELD_KEY_RE: Final = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")
_CPU_QUANTITY_RE: Final = re.compile(r"^(\d+(?:\.\d+)?)(m?)$")
# A container requesting a whole core runs at nice 0; every 1.25x less CPU requested is one nice level more
# (the kernel's weight ratio between adjacent levels), so the processes' weights keep the requests' ratios,
# as cgroups' cpu.weight would. No request at all (BestEffort) is the lowest weight.
CPU_REQUEST_AT_NICE_0_MILLI: Final = 1000
NICE_LEVEL_WEIGHT_RATIO: Final = 1.25
NICENESS_MAX: Final = 19


class PodConfigError(Exception):
    """The pod cannot be started as declared; the message says which reference is wrong."""

    reason = CONFIG_ERROR


@dataclass(frozen=True)
class PodObjects:
    """The ConfigMaps and Secrets a pod references (Secret values decoded), keyed by name; absent = missing."""

    config_maps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    secrets: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeSettings:
    """What the kubelet knows about this machine, the same for every pod."""

    node_name: str
    host_ip: str
    trust_domain: str
    spiffe_dir: (
        Path  # holds SPIFFE_CSI_SOCKET_NAME, a link to the SPIRE agent's socket (short path: sun_path ≤ 107 bytes)
    )
    dns_authority: str  # host:port of the kubelet's Service resolver
    entrypoint: tuple[str, ...]  # the runtime image's entry point, from the project's environment
    executables: Mapping[str, str]  # command names mapped to local paths ("python" → the venv's)
    base_env: Mapping[str, str]  # PATH, HOME… (a container image's default environment)


@dataclass(frozen=True)
class VolumePlan:
    """One pod volume as a local directory: files to write into a per-pod directory, or a host path as is."""

    name: str
    files: Mapping[str, bytes] = field(default_factory=dict)
    host_path: str | None = None


@dataclass(frozen=True)
class ProcessSpec:
    """One container as a local process."""

    container: str
    image: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    gid: int | None
    ports: Mapping[str, int]  # containerPort by name
    readiness_probe: Mapping[str, Any] | None
    niceness: int = 0  # from the container's CPU request (niceness_for_cpu_request)


def volume_dir(pod_dir: Path, plan: VolumePlan) -> Path:
    return Path(plan.host_path) if plan.host_path is not None else pod_dir / "volumes" / plan.name


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: defined variables are substituted, others left as written."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        return env.get(name, match.group(0))

    return _VAR_RE.sub(substitute, value)


def field_value(pod: Mapping[str, Any], pod_ip: str, host_ip: str, path: str) -> str:
    """A ``fieldRef`` of the downward API."""
    meta, spec = pod.get("metadata", {}), pod.get("spec", {})
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path in simple:
        return str(simple[path])
    keyed = _FIELD_KEY_RE.match(path)
    if keyed is not None:
        return str((meta.get(keyed.group(1)) or {}).get(keyed.group(2), ""))
    raise PodConfigError(f"fieldRef {path!r} is not supported by the process kubelet")


def _lookup(objects: PodObjects, kind: str, ref: Mapping[str, Any], key: str | None) -> str | None:
    """A value from a ConfigMap/Secret reference; None when missing and optional."""
    source = objects.config_maps if kind == "configMap" else objects.secrets
    name, optional = ref.get("name", ""), bool(ref.get("optional", False))
    data = source.get(name)
    if data is None:
        if optional:
            return None
        raise PodConfigError(f'{kind} "{name}" not found')
    if key is None:
        return ""
    if key not in data:
        if optional:
            return None
        raise PodConfigError(f'couldn\'t find key {key} in {kind} "{name}"')
    return data[key]


def resolve_env(
    pod: Mapping[str, Any], container: Mapping[str, Any], objects: PodObjects, *, pod_ip: str, host_ip: str
) -> dict[str, str]:
    """The container's environment as Kubernetes builds it (without the image's defaults)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, ref_key in (("configMap", "configMapRef"), ("secret", "secretRef")):
            ref = source.get(ref_key)
            if ref is None:
                continue
            if _lookup(objects, kind, ref, None) is None:
                continue
            data = (objects.config_maps if kind == "configMap" else objects.secrets)[ref["name"]]
            env.update({prefix + k: v for k, v in data.items()})
    for item in container.get("env") or []:
        name = item["name"]
        if "valueFrom" not in item:
            env[name] = expand(item.get("value", ""), env)
            continue
        value_from = item["valueFrom"]
        value: str | None
        if "configMapKeyRef" in value_from:
            ref = value_from["configMapKeyRef"]
            value = _lookup(objects, "configMap", ref, ref.get("key", ""))
        elif "secretKeyRef" in value_from:
            ref = value_from["secretKeyRef"]
            value = _lookup(objects, "secret", ref, ref.get("key", ""))
        elif "fieldRef" in value_from:
            value = field_value(pod, pod_ip, host_ip, value_from["fieldRef"].get("fieldPath", ""))
        else:
            raise PodConfigError(f"env {name}: only value, configMapKeyRef, secretKeyRef and fieldRef are supported")
        if value is not None:
            env[name] = value
    return env


def volume_plans(pod: Mapping[str, Any], objects: PodObjects, spiffe_dir: Path) -> list[VolumePlan]:
    """Every pod volume as local content; a missing non-optional ConfigMap or Secret is an error."""
    plans = []
    for volume in pod.get("spec", {}).get("volumes") or []:
        name = volume["name"]
        if "configMap" in volume or "secret" in volume:
            kind = "configMap" if "configMap" in volume else "secret"
            ref = dict(volume[kind])
            if kind == "secret":
                ref["name"] = ref.get("secretName", "")
            data = (objects.config_maps if kind == "configMap" else objects.secrets).get(ref["name"])
            if data is None:
                _lookup(objects, kind, ref, None)  # raises unless optional
                data = {}
            items = ref.get("items")
            chosen = {i["path"]: data[i["key"]] for i in items if i["key"] in data} if items else dict(data)
            plans.append(VolumePlan(name, files={path: text.encode() for path, text in chosen.items()}))
        elif volume.get("csi", {}).get("driver") == SPIFFE_CSI_DRIVER:
            plans.append(VolumePlan(name, host_path=str(spiffe_dir)))
        elif "hostPath" in volume:
            plans.append(VolumePlan(name, host_path=volume["hostPath"]["path"]))
        else:  # emptyDir and anything else: an empty per-pod directory
            plans.append(VolumePlan(name))
    return plans


def mount_table(container: Mapping[str, Any], plans: Sequence[VolumePlan], pod_dir: Path) -> list[tuple[str, str]]:
    """(container mountPath, local directory), longest mountPath first so nested mounts win."""
    by_name = {plan.name: plan for plan in plans}
    table = []
    for mount in container.get("volumeMounts") or []:
        plan = by_name.get(mount["name"])
        if plan is None:
            raise PodConfigError(f"volumeMount {mount['name']!r} names no volume of the pod")
        local = volume_dir(pod_dir, plan)
        sub_path = mount.get("subPath")
        table.append((mount["mountPath"].rstrip("/"), str(local / sub_path if sub_path else local)))
    return sorted(table, key=lambda pair: len(pair[0]), reverse=True)


def rewrite_paths(value: str, mounts: Sequence[tuple[str, str]]) -> str:
    """A path under a container mountPath (alone or after ``unix://``) → the same path locally."""
    for scheme in ("", "unix://"):
        for container_path, local_path in mounts:
            prefix = scheme + container_path
            if value == prefix or value.startswith(prefix + "/"):
                return scheme + local_path + value[len(prefix) :]
    return value


def point_grpc_dns(value: str, dns_authority: str) -> str:
    """``dns:///name:port`` (the system resolver) → ``dns://<kubelet resolver>/name:port``."""
    return value.replace(GRPC_DNS_PREFIX, f"dns://{dns_authority}/")


def container_argv(container: Mapping[str, Any], node: NodeSettings, env: Mapping[str, str]) -> tuple[str, ...]:
    command = list(container.get("command") or [])
    args = list(container.get("args") or [])
    argv = [*command, *args] if command else [*node.entrypoint, *args]
    if not argv:
        raise PodConfigError(f"container {container['name']!r} has no command and the image no entry point")
    argv = [expand(arg, env) for arg in argv]
    argv[0] = node.executables.get(argv[0], argv[0])
    return tuple(argv)


def cpu_request_milli(container: Mapping[str, Any]) -> int | None:
    """The container's CPU request in millicores (``100m``, ``0.5``, ``2``); None when it requests none."""
    quantity = ((container.get("resources") or {}).get("requests") or {}).get("cpu")
    if quantity is None:
        return None
    match = _CPU_QUANTITY_RE.match(str(quantity))
    if match is None:
        raise PodConfigError(f"container {container.get('name')!r}: CPU request {quantity!r} is not a quantity")
    number, milli = float(match.group(1)), match.group(2) == "m"
    return math.ceil(number if milli else number * 1000)


def niceness_for_cpu_request(request_milli: int | None) -> int:
    """The nice value that gives a process the CPU weight, relative to its neighbours', that a cgroup with
    this request would have: processes compete for the cores in the ratio of their requests."""
    if not request_milli:
        return NICENESS_MAX
    levels = math.log(CPU_REQUEST_AT_NICE_0_MILLI / request_milli, NICE_LEVEL_WEIGHT_RATIO)
    return max(0, min(NICENESS_MAX, round(levels)))


def pod_gid(pod: Mapping[str, Any], trust_domain: str) -> int:
    """The local gid of the pod's SPIFFE ID, exactly as the operator's local-mode SPIRE entries select it."""
    meta, spec = pod["metadata"], pod.get("spec", {})
    account = spec.get("serviceAccountName") or "default"
    return local_gid(str(SpiffeId(trust_domain, f"/ns/{meta['namespace']}/sa/{account}")))


def process_specs(
    pod: Mapping[str, Any], objects: PodObjects, node: NodeSettings, *, pod_ip: str, pod_dir: Path
) -> list[ProcessSpec]:
    """The processes of every container of ``pod``; raises PodConfigError when one cannot be built."""
    spec = pod.get("spec", {})
    if spec.get("initContainers"):
        raise PodConfigError("init containers are not supported by the process kubelet")
    plans = volume_plans(pod, objects, node.spiffe_dir)
    gid = pod_gid(pod, node.trust_domain)
    result = []
    for container in spec.get("containers") or []:
        mounts = mount_table(container, plans, pod_dir)
        declared = resolve_env(pod, container, objects, pod_ip=pod_ip, host_ip=node.host_ip)
        env = {
            **node.base_env,
            "HOSTNAME": pod["metadata"]["name"],
            **{k: point_grpc_dns(rewrite_paths(v, mounts), node.dns_authority) for k, v in declared.items()},
        }
        argv = tuple(rewrite_paths(arg, mounts) for arg in container_argv(container, node, env))
        ports = {p["name"]: int(p["containerPort"]) for p in container.get("ports") or [] if p.get("name")}
        result.append(
            ProcessSpec(
                container=container["name"],
                image=container.get("image", ""),
                argv=argv,
                env=env,
                gid=gid,
                ports=ports,
                readiness_probe=container.get("readinessProbe"),
                niceness=niceness_for_cpu_request(cpu_request_milli(container)),
            )
        )
    return result
