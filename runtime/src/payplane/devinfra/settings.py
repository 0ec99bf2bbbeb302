"""Where the local infrastructure keeps its caches, state and ports (all overridable by environment)."""

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PORT_BASE = 17400


@dataclass(frozen=True)
class Ports:
    """Every loopback port the local infrastructure listens on, derived from one base."""

    base: int

    @property
    def postgres(self) -> int:
        return self.base + 32

    @property
    def redis(self) -> int:
        return self.base + 79

    @property
    def kafka(self) -> int:
        return self.base + 92

    @property
    def kafka_controller(self) -> int:
        return self.base + 93

    @property
    def etcd_client(self) -> int:
        return self.base + 23

    @property
    def etcd_peer(self) -> int:
        return self.base + 24

    @property
    def kube_apiserver(self) -> int:
        return self.base + 43

    @property
    def kube_controller_manager(self) -> int:
        return self.base + 57

    @property
    def kube_scheduler(self) -> int:
        return self.base + 59

    @property
    def spire_server(self) -> int:
        return self.base + 81

    @property
    def spire_agent_health(self) -> int:
        return self.base + 82


@dataclass(frozen=True)
class InfraSettings:
    cache_dir: Path
    state_dir: Path
    ports: Ports
    trust_domain: str
    svid_ttl_s: int

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def endpoints_file(self) -> Path:
        return self.state_dir / "endpoints.env"


def _path_from_env(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else default


def load_settings() -> InfraSettings:
    """Settings from PAYPLANE_* environment variables, falling back to per-user defaults."""
    home = Path.home()
    return InfraSettings(
        cache_dir=_path_from_env("PAYPLANE_CACHE_DIR", home / ".cache" / "payplane"),
        state_dir=_path_from_env("PAYPLANE_STATE_DIR", home / ".local" / "state" / "payplane"),
        ports=Ports(base=int(os.environ.get("PAYPLANE_PORT_BASE", DEFAULT_PORT_BASE))),
        trust_domain=os.environ.get("PAYPLANE_TRUST_DOMAIN", "payplane.local"),
        svid_ttl_s=int(os.environ.get("PAYPLANE_SVID_TTL_S", "3600")),
    )
