"""The spire component's rendered configs and the local-identity helpers (no SPIRE process needed)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from payplane.devinfra.components.spire import Spire, _render
from payplane.devinfra.errors import InfraError
from payplane.devinfra.local_identity import gid_selector, spawn_identity
from payplane.devinfra.settings import InfraSettings, Ports
from payplane_contracts.identity import LOCAL_GID_BASE, LOCAL_GID_RANGE, local_gid


def _spire(tmp_path: Path, svid_ttl_s: int = 3600) -> Spire:
    settings = InfraSettings(
        cache_dir=tmp_path / "cache",
        state_dir=tmp_path / "state",
        ports=Ports(20000),
        trust_domain="unit.test",
        svid_ttl_s=svid_ttl_s,
    )
    return Spire(settings)


def test_server_config_binds_loopback_with_the_settings_ttls(tmp_path: Path) -> None:
    spire = _spire(tmp_path, svid_ttl_s=7200)
    spire._write_server_config()

    config = (spire.home / "server.conf").read_text()

    assert 'bind_address          = "127.0.0.1"' in config
    assert f'bind_port             = "{spire.settings.ports.spire_server}"' in config
    assert 'trust_domain          = "unit.test"' in config
    assert 'default_x509_svid_ttl = "7200s"' in config
    assert 'ca_ttl                = "86400s"' in config  # 6 x 7200 s is less than the 24 h floor
    assert f'socket_path           = "{spire.admin_socket}"' in config
    assert "$" not in config


def test_ca_outlives_long_svids_six_times(tmp_path: Path) -> None:
    spire = _spire(tmp_path, svid_ttl_s=24 * 3600)
    spire._write_server_config()

    assert f'ca_ttl                = "{6 * 24 * 3600}s"' in (spire.home / "server.conf").read_text()


def test_agent_config_is_complete_and_private(tmp_path: Path) -> None:
    target = tmp_path / "agent.conf"
    _render(
        "spire-agent.conf.tmpl",
        target,
        data_dir="/d",
        server_port=1,
        workload_socket="/w.sock",
        trust_domain="unit.test",
        trust_bundle_path="/b.pem",
        health_port=2,
        join_token="tok",
    )

    config = target.read_text()

    assert 'join_token        = "tok"' in config
    assert 'WorkloadAttestor "unix"' in config
    assert "$" not in config
    assert target.stat().st_mode & 0o077 == 0  # the join token is a credential


def test_endpoints_name_the_sockets_and_the_node_alias(tmp_path: Path) -> None:
    spire = _spire(tmp_path)

    endpoints = spire.endpoints()

    assert endpoints["SPIFFE_ENDPOINT_SOCKET"] == f"unix://{spire.workload_socket}"
    assert endpoints["PAYPLANE_SPIRE_NODE_ID"] == "spiffe://unit.test/payplane/local-node"
    assert endpoints["PAYPLANE_SPIRE_TRUST_DOMAIN"] == "unit.test"


def test_local_gid_is_stable_and_in_payplanes_range() -> None:
    gid = local_gid("spiffe://payplane.local/ns/a/sa/b-gateway")

    assert gid == local_gid("spiffe://payplane.local/ns/a/sa/b-gateway")
    assert LOCAL_GID_BASE <= gid < LOCAL_GID_BASE + LOCAL_GID_RANGE
    assert gid != local_gid("spiffe://payplane.local/ns/a/sa/b-payment-worker")
    assert gid_selector(gid) == f"unix:gid:{gid}"


def test_spawned_child_runs_with_the_workload_gid_and_no_other_groups() -> None:
    gid = local_gid("spiffe://payplane.local/ns/unit/sa/x-gateway")
    if os.geteuid() != 0:
        with pytest.raises(InfraError, match="need root"):
            spawn_identity(gid)
        return

    out = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getuid(), os.getegid(), os.getgroups())"],
        capture_output=True,
        text=True,
        check=True,
        **spawn_identity(gid),
    ).stdout

    assert out.strip().split(maxsplit=2) == ["0", str(gid), "[]"]
