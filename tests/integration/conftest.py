"""Session fixtures that bring the real local infrastructure up (or reuse it) once per test run.

``payplane infra up`` is idempotent: components already healthy are reused, so a developer who keeps
the infrastructure running pays nothing here. A component that cannot be built or started fails the
session with the reason and the log path; nothing is skipped.
"""

from dataclasses import dataclass

import pytest

from payplane.devinfra import stack
from payplane.devinfra.settings import InfraSettings, load_settings


@dataclass(frozen=True)
class Infra:
    settings: InfraSettings
    endpoints: dict[str, str]

    def __getitem__(self, key: str) -> str:
        return self.endpoints[key]


@pytest.fixture(scope="session")
def infra() -> Infra:
    settings = load_settings()
    endpoints = stack.up(settings)
    return Infra(settings=settings, endpoints=endpoints)
