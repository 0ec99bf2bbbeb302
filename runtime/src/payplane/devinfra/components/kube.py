"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager, scheduler.

Built from source through the Go module proxy (see ``kube_build``), so the operator is tested against the
genuine API server: admission, RBAC, CRD validation, status subresources, watches, garbage collection and
Deployment → ReplicaSet → Pod → binding all behave as in production. There is no kubelet, so pods are
scheduled (given a Node object) but never run.

Every identity authenticates with a client certificate from one local CA (``pki``): the admin is in
``system:masters``; the controller-manager and scheduler use the identities bootstrap RBAC grants their
permissions to, so the cluster's own RBAC is exercised rather than bypassed.
"""

import json
import ssl
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from payplane.devinfra.components.base import Component
from payplane.devinfra.helm_build import ensure_helm, helm_dirs
from payplane.devinfra.kube_build import ensure_etcd, ensure_kubernetes, etcd_dirs, kubernetes_dirs
from payplane.devinfra.kubeconfig import write_kubeconfig
from payplane.devinfra.pki import (
    ADMIN,
    APISERVER,
    CONTROLLER_MANAGER,
    FRONT_PROXY_CA,
    FRONT_PROXY_CLIENT,
    SCHEDULER,
    ClusterPki,
    ensure_cluster_pki,
)
from payplane.devinfra.procs import ManagedProcess
from payplane.devinfra.progress import say
from payplane.devinfra.rulecheck_build import ensure_rulecheck, rulecheck_binary
from payplane.devinfra.waiting import wait_healthy

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"  # its first address, 10.0.0.1, is in the apiserver certificate
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
ALWAYS_ALLOWED_PATHS = "/healthz,/readyz,/livez,/metrics"
PROBE_TIMEOUT_S = 2.0
ETCD_START_TIMEOUT_S = 30.0
# First start on 2 cores: the apiserver bootstraps RBAC roles, priority levels and the system namespaces.
APISERVER_START_TIMEOUT_S = 120.0
CONTROLLER_START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Stage:
    """One process of the control plane, with the probe that says it is up and how long to wait."""

    process: ManagedProcess
    probe: Callable[[], bool]
    timeout_s: float


def _get(url: str, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S, context=context) as response:  # noqa: S310
        return int(response.status), bytes(response.read())


def etcd_is_healthy(port: int) -> bool:
    """etcd's /health answers {"health":"true"} only when it has a leader and serves reads."""
    status, body = _get(f"http://127.0.0.1:{port}/health")
    return status == 200 and json.loads(body).get("health") == "true"


def https_says_ok(url: str, context: ssl.SSLContext) -> bool:
    """Kubernetes health endpoints answer exactly ``ok`` when every check passes."""
    status, body = _get(url, context)
    return status == 200 and body.strip() == b"ok"


def _quietly(probe: Callable[[], bool]) -> bool:
    """A probe that cannot connect, handshake or parse means "not healthy", never an exception."""
    try:
        return probe()
    except (OSError, ValueError, ssl.SSLError):
        return False


class Kubernetes(Component):
    name = "kubernetes"

    @property
    def kube_dir(self) -> Path:
        return self.settings.state_dir / "kube"

    @property
    def pki(self) -> ClusterPki:
        return ClusterPki(self.kube_dir / "pki")

    @property
    def admin_kubeconfig(self) -> Path:
        return self._kubeconfig(ADMIN)

    def _kubeconfig(self, identity: str) -> Path:
        return self.kube_dir / f"{identity}.kubeconfig"

    @property
    def apiserver_url(self) -> str:
        return f"https://127.0.0.1:{self.settings.ports.kube_apiserver}"

    def _binary(self, name: str) -> str:
        return str(kubernetes_dirs(self.settings.cache_dir).bin / name)

    def build(self) -> None:
        ensure_etcd(self.settings.cache_dir, self.build_log)
        ensure_kubernetes(self.settings.cache_dir, self.build_log)
        ensure_helm(self.settings.cache_dir, self.build_log)  # the operator chart's tests install with it
        ensure_rulecheck(self.settings.cache_dir, self.build_log)  # and check its alert rules and dashboards

    def ports(self) -> list[int]:
        ports = self.settings.ports
        return [
            ports.etcd_client,
            ports.etcd_peer,
            ports.kube_apiserver,
            ports.kube_controller_manager,
            ports.kube_scheduler,
        ]

    def _etcd_argv(self) -> list[str]:
        client_url = f"http://127.0.0.1:{self.settings.ports.etcd_client}"
        peer_url = f"http://127.0.0.1:{self.settings.ports.etcd_peer}"
        return [
            str(etcd_dirs(self.settings.cache_dir).bin / "etcd"),
            "--name=payplane",
            f"--data-dir={self.kube_dir / 'etcd'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=payplane={peer_url}",
            # a dev cluster trades crash durability for speed: fsync dominates etcd latency on slow disks
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]

    def _apiserver_argv(self) -> list[str]:
        pki = self.pki
        return [
            self._binary("kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{self.settings.ports.etcd_client}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.settings.ports.kube_apiserver}",
            f"--tls-cert-file={pki.cert(APISERVER)}",
            f"--tls-private-key-file={pki.key(APISERVER)}",
            f"--client-ca-file={pki.ca_cert}",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki.service_account_public_key}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            # The "kubernetes" Service cannot point at 127.0.0.1: Endpoints refuse loopback addresses, and
            # the default lease reconciler would log that failure every 10 s. No pod runs here to use it.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            *self._front_proxy_flags(),
        ]

    def _front_proxy_flags(self) -> list[str]:
        """API aggregation (e.g. a metrics API for HPAs), and the CA bundle that the controller-manager and
        scheduler read from the extension-apiserver-authentication ConfigMap (they log an error every
        10 s without it)."""
        pki = self.pki
        return [
            f"--requestheader-client-ca-file={pki.cert(FRONT_PROXY_CA)}",
            f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki.cert(FRONT_PROXY_CLIENT)}",
            f"--proxy-client-key-file={pki.key(FRONT_PROXY_CLIENT)}",
        ]

    def _component_flags(self, identity: str, port: int) -> list[str]:
        """Flags KCM and the scheduler share: identity, delegated authn/authz, TLS health port."""
        kubeconfig = self._kubeconfig(identity)
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--authorization-always-allow-paths={ALWAYS_ALLOWED_PATHS}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--tls-cert-file={self.pki.cert(identity)}",
            f"--tls-private-key-file={self.pki.key(identity)}",
            "--leader-elect=false",
            "--profiling=false",
        ]

    def _controller_manager_argv(self) -> list[str]:
        pki = self.pki
        return [
            self._binary("kube-controller-manager"),
            *self._component_flags(CONTROLLER_MANAGER, self.settings.ports.kube_controller_manager),
            "--controllers=*",
            "--use-service-account-credentials=true",
            f"--root-ca-file={pki.ca_cert}",
            f"--service-account-private-key-file={pki.service_account_key}",
            f"--cluster-signing-cert-file={pki.ca_cert}",
            f"--cluster-signing-key-file={pki.ca_key}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        ]

    def _scheduler_argv(self) -> list[str]:
        return [
            self._binary("kube-scheduler"),
            *self._component_flags(SCHEDULER, self.settings.ports.kube_scheduler),
        ]

    def processes(self) -> list[ManagedProcess]:
        return [stage.process for stage in self._stages()]

    def _stages(self) -> list[Stage]:
        ports = self.settings.ports
        return [
            Stage(self.process("etcd", self._etcd_argv()), self._etcd_healthy, ETCD_START_TIMEOUT_S),
            Stage(
                self.process("kube-apiserver", self._apiserver_argv()), self._apiserver_ready, APISERVER_START_TIMEOUT_S
            ),
            Stage(
                self.process("kube-controller-manager", self._controller_manager_argv()),
                lambda: self._component_healthy(ports.kube_controller_manager),
                CONTROLLER_START_TIMEOUT_S,
            ),
            Stage(
                self.process("kube-scheduler", self._scheduler_argv()),
                lambda: self._component_healthy(ports.kube_scheduler),
                CONTROLLER_START_TIMEOUT_S,
            ),
        ]

    def _etcd_healthy(self) -> bool:
        return _quietly(lambda: etcd_is_healthy(self.settings.ports.etcd_client))

    def _tls_context(self, *, as_admin: bool) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        if as_admin:
            context.load_cert_chain(str(self.pki.cert(ADMIN)), str(self.pki.key(ADMIN)))
        return context

    def _apiserver_ready(self) -> bool:
        """/readyz as the admin: passes once etcd is reachable and every post-start hook has run."""
        return _quietly(lambda: https_says_ok(f"{self.apiserver_url}/readyz", self._tls_context(as_admin=True)))

    def _component_healthy(self, port: int) -> bool:
        """/healthz over TLS, verified against our CA (the certificate is the one we issued)."""
        return _quietly(lambda: https_says_ok(f"https://127.0.0.1:{port}/healthz", self._tls_context(as_admin=False)))

    def healthy(self) -> bool:
        return all(stage.probe() for stage in self._stages())

    def _prepare(self) -> None:
        """Certificates once (reused while valid), kubeconfigs for every identity, etcd's data dir."""
        pki, generated = ensure_cluster_pki(self.pki.directory)
        if generated:
            say(f"{self.name}: generated a local CA and certificates in {pki.directory}")
        for identity in (ADMIN, CONTROLLER_MANAGER, SCHEDULER):
            write_kubeconfig(
                self._kubeconfig(identity),
                server_url=self.apiserver_url,
                ca_cert=pki.ca_cert,
                client_cert=pki.cert(identity),
                client_key=pki.key(identity),
                user=identity,
            )
        (self.kube_dir / "etcd").mkdir(parents=True, exist_ok=True, mode=0o700)

    def start(self) -> None:
        self._prepare()
        for stage in self._stages():
            stage.process.start()
            wait_healthy(f"{self.name}/{stage.process.name}", stage.probe, stage.timeout_s, stage.process)
            say(f"{self.name}: {stage.process.name} healthy")

    def endpoints(self) -> dict[str, str]:
        return {
            "KUBECONFIG": str(self.admin_kubeconfig),
            "PAYPLANE_KUBECTL": self._binary("kubectl"),
            "PAYPLANE_KUBE_APISERVER": self.apiserver_url,
            "PAYPLANE_HELM": str(helm_dirs(self.settings.cache_dir).bin / "helm"),
            "PAYPLANE_RULECHECK": str(rulecheck_binary(self.settings.cache_dir)),
        }
