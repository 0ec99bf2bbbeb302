"""The endpoints file round-trips; settings come from the environment; errors say what to do."""

from pathlib import Path

import pytest

from payplane.devinfra.endpoints import read_endpoints, write_endpoints
from payplane.devinfra.errors import InfraError, PortInUseError
from payplane.devinfra.settings import DEFAULT_PORT_BASE, load_settings


def test_endpoints_round_trip_with_awkward_values(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.env"
    values = {"KUBECONFIG": "/a path/with spaces", "DSN": "postgresql://u@h:1/db?x=1&y='2'", "EMPTY": ""}
    write_endpoints(path, values)
    assert read_endpoints(path) == values


def test_missing_endpoints_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(InfraError, match="payplane infra up"):
        read_endpoints(tmp_path / "absent.env")


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PAYPLANE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PAYPLANE_PORT_BASE", "20000")
    monkeypatch.setenv("PAYPLANE_SVID_TTL_S", "120")
    settings = load_settings()
    assert settings.state_dir == tmp_path / "state"
    assert settings.ports.postgres == 20032
    assert settings.svid_ttl_s == 120
    assert settings.endpoints_file == tmp_path / "state" / "endpoints.env"


def test_default_ports_do_not_collide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAYPLANE_PORT_BASE", raising=False)
    ports = load_settings().ports
    assert ports.base == DEFAULT_PORT_BASE
    names = [n for n in dir(type(ports)) if isinstance(getattr(type(ports), n), property)]
    values = [getattr(ports, n) for n in names]
    assert len(values) == len(set(values)), "two components share a port"
    assert all(1024 < v < 65536 for v in values)


def test_port_in_use_error_names_port_and_remedy() -> None:
    message = str(PortInUseError("redis", 17479))
    assert "17479" in message
    assert "PAYPLANE_PORT_BASE" in message
