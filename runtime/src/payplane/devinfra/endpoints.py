"""The endpoints file ``up`` writes and tests and tools read (``KEY=value`` lines, shell-sourceable)."""

import shlex
from pathlib import Path

from payplane.devinfra.errors import InfraError


def write_endpoints(path: Path, endpoints: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"{key}={shlex.quote(value)}\n" for key, value in sorted(endpoints.items())))
    tmp.replace(path)


def read_endpoints(path: Path) -> dict[str, str]:
    if not path.exists():
        raise InfraError(f"no endpoints file at {path}: run `payplane infra up` first")
    endpoints: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            endpoints[key] = shlex.split(value)[0] if value else ""
    return endpoints
