"""Test tiers: ``tests/unit`` (no infrastructure), ``tests/integration`` (real local infrastructure),
``tests/e2e`` (the whole platform). Each tier's marker is applied from its folder."""

from pathlib import Path

import pytest

TIER_BY_FOLDER = {"unit": "unit", "integration": "integration", "e2e": "e2e"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests_root = Path(__file__).parent
    for item in items:
        relative = Path(item.path).relative_to(tests_root)
        marker = TIER_BY_FOLDER.get(relative.parts[0])
        if marker:
            item.add_marker(marker)
