"""The whole local infrastructure: components in dependency order, brought up, down and inspected."""

from payplane.devinfra.components.base import Component, ComponentStatus
from payplane.devinfra.components.kafka import Kafka
from payplane.devinfra.components.kube import Kubernetes
from payplane.devinfra.components.postgres import Postgres
from payplane.devinfra.components.redis import Redis
from payplane.devinfra.components.spire import Spire
from payplane.devinfra.endpoints import read_endpoints, write_endpoints
from payplane.devinfra.errors import InfraError
from payplane.devinfra.progress import say
from payplane.devinfra.settings import InfraSettings

# Start order; ``down`` goes in reverse.
COMPONENT_TYPES: list[type[Component]] = [Postgres, Redis, Kafka, Kubernetes, Spire]


def components(settings: InfraSettings, only: list[str] | None = None) -> list[Component]:
    known = {cls.name: cls for cls in COMPONENT_TYPES}
    unknown = sorted(set(only or []) - known.keys())
    if unknown:
        raise InfraError(f"unknown component(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return [cls(settings) for cls in COMPONENT_TYPES if not only or cls.name in only]


def up(settings: InfraSettings, only: list[str] | None = None) -> dict[str, str]:
    """Build (cached), start and health-check each component; write and return all endpoints."""
    endpoints: dict[str, str] = {"PAYPLANE_STATE_DIR": str(settings.state_dir)}
    if settings.endpoints_file.exists():
        endpoints = {**read_endpoints(settings.endpoints_file), **endpoints}
    for component in components(settings, only):
        endpoints.update(component.up())
        write_endpoints(settings.endpoints_file, endpoints)
    say(f"endpoints written to {settings.endpoints_file}; logs in {settings.log_dir}")
    return endpoints


def down(settings: InfraSettings, only: list[str] | None = None) -> None:
    for component in reversed(components(settings, only)):
        component.down()
    if not only:
        settings.endpoints_file.unlink(missing_ok=True)


def status(settings: InfraSettings) -> list[ComponentStatus]:
    return [component.status() for component in components(settings)]
