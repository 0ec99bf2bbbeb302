"""kopf handlers: thin functions and their registration, nothing else.

Each handler hands the object to ``reconcile.controller.Controller`` and lets ``boundary`` translate the
outcome for kopf. ``registry(config)`` builds a kopf registry holding all of them (timer intervals come
from the configuration, which is why registration is a function and not import-time decorators);
``python -m payplane_operator`` runs it, and so do the integration tests through ``KopfRunner``.
"""

import kopf

from payplane_operator.handlers import lifecycle, owned, policies, rails, shards


def build_registry(drift_interval_s: float) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    lifecycle.register(registry)
    rails.register(registry, drift_interval_s)
    shards.register(registry, drift_interval_s)
    policies.register(registry, drift_interval_s)
    owned.register(registry)
    return registry
