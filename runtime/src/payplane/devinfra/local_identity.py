"""Distinct SPIFFE identities for local processes that all run as root.

In a cluster SPIRE tells workloads apart by pod (k8s selectors). Locally every process runs as uid
0, and all Python workers run the same interpreter, so neither ``unix:uid`` nor ``unix:path`` can
tell them apart. payplane therefore gives each local workload its own *primary group id* and keeps
uid 0: ``subprocess.Popen(..., group=<gid>, extra_groups=[])``, registered with the selector
``unix:gid:<gid>``.

Why the gid and not a uid of its own: SPIRE's unix workload attestor reads the peer's *effective*
gid from ``/proc/<pid>/status`` (the second value of ``Gid:``), and setting it needs no user
account, no ``useradd`` and no change to file ownership; the process keeps uid 0 and so can still
read the state directory and the venv. The gid does not have to exist in ``/etc/group``.
``extra_groups=[]`` drops root's supplementary groups so only the chosen gid describes the process.

This is an identity for tests and local runs, not a security boundary: any root process can take
any gid. Changing the gid needs CAP_SETGID, so it requires running as root (as CI does).
"""

import os
from typing import TypedDict

from payplane.devinfra.errors import InfraError
from payplane_contracts.identity import local_gid


class SpawnIdentity(TypedDict):
    """Keyword arguments for ``subprocess.Popen`` / ``asyncio.create_subprocess_exec``."""

    group: int
    extra_groups: list[int]


def ensure_distinct(spiffe_ids: list[str]) -> None:
    gids = [local_gid(spiffe_id) for spiffe_id in spiffe_ids]
    if len(set(gids)) != len(gids):
        raise InfraError(f"local gids collide for {spiffe_ids}: rename one workload")


def gid_selector(gid: int) -> str:
    """The SPIRE selector that matches a process whose effective gid is ``gid``."""
    return f"unix:gid:{gid}"


def spawn_identity(gid: int) -> SpawnIdentity:
    """Popen arguments that make the child attest as ``gid`` (uid stays 0)."""
    if os.geteuid() != 0:
        raise InfraError(
            "local workload identities need root (to switch the child's group id); "
            "run the local infrastructure as root, as CI does"
        )
    return SpawnIdentity(group=gid, extra_groups=[])
