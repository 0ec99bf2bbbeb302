"""``python -m payplane_operator``: check the configuration, then run the kopf operator.

Watches every namespace unless ``PAYPLANE_WATCH_NAMESPACES`` (comma-separated) narrows it. Peering is
mandatory (two replicas never both act; the kopf peering CRDs must be installed) unless
``PAYPLANE_PEERING_STANDALONE=true``. Liveness is served at ``PAYPLANE_LIVENESS_ENDPOINT`` (default
``http://127.0.0.1:8080/healthz``; the chart binds all interfaces). Logs go to stderr, as JSON when
``PAYPLANE_LOG_FORMAT=json``; ``PAYPLANE_LOG_LEVEL=debug`` or ``warning`` moves the level from info.
"""

import logging
import os
import sys

import kopf

from payplane_operator.errors import ConfigError
from payplane_operator.handlers import build_registry
from payplane_operator.settings import load_config


def main() -> int:
    try:
        config = load_config()
    except ConfigError as error:
        print(f"payplane-operator: {error}", file=sys.stderr)
        return 2
    log_level = os.environ.get("PAYPLANE_LOG_LEVEL", "info").lower()
    json_logs = os.environ.get("PAYPLANE_LOG_FORMAT", "").lower() == "json"
    if log_level != "debug":  # one line per handled event (every Deployment status change) is noise
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    kopf.configure(
        debug=log_level == "debug",
        quiet=log_level == "warning",
        log_format=kopf.LogFormat.JSON if json_logs else kopf.LogFormat.FULL,
    )
    namespaces = [n.strip() for n in os.environ.get("PAYPLANE_WATCH_NAMESPACES", "").split(",") if n.strip()]
    standalone = os.environ.get("PAYPLANE_PEERING_STANDALONE", "").lower() in {"1", "true", "yes"}
    kopf.run(
        registry=build_registry(config.drift_interval_s),
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=standalone,
        peering_name=None if standalone else config.peering_name,
        priority=config.peering_priority,
        liveness_endpoint=os.environ.get("PAYPLANE_LIVENESS_ENDPOINT", "http://127.0.0.1:8080/healthz"),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
