"""Kubeconfig files for the local control plane, with the certificates embedded.

Embedded (``*-data``) rather than referenced by path, so a kubeconfig stays valid when copied or read from
another working directory, and kubectl, the Python client and kopf all read it the same way.
"""

import base64
import os
from pathlib import Path

import yaml

CLUSTER_NAME = "payplane-local"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig_document(
    *, server_url: str, ca_cert: Path, client_cert: Path, client_key: Path, user: str
) -> dict[str, object]:
    """One cluster, one user, one context (the current one)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CLUSTER_NAME,
                "cluster": {
                    "server": server_url,
                    "certificate-authority-data": _b64(ca_cert),
                },
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(client_cert),
                    "client-key-data": _b64(client_key),
                },
            }
        ],
        "contexts": [{"name": f"{user}@{CLUSTER_NAME}", "context": {"cluster": CLUSTER_NAME, "user": user}}],
        "current-context": f"{user}@{CLUSTER_NAME}",
        "preferences": {},
    }


def write_kubeconfig(
    path: Path, *, server_url: str, ca_cert: Path, client_cert: Path, client_key: Path, user: str
) -> None:
    """Write atomically and owner-only: the file holds a private key."""
    document = kubeconfig_document(
        server_url=server_url,
        ca_cert=ca_cert,
        client_cert=client_cert,
        client_key=client_key,
        user=user,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(document, handle, sort_keys=False)
    tmp.replace(path)
