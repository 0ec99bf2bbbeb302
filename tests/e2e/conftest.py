"""What the end-to-end tests share: the infrastructure settings, and a platform brought up by the same
code as ``make run`` (``payplane.devinfra.up.bring_up``) in a namespace of its own, removed afterwards
whatever happened (topics with the rail, SPIRE entries, databases, the kubelet's Node and directories).
"""

import asyncio
import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from payplane.devinfra import stack
from payplane.devinfra.endpoints import read_endpoints
from payplane.devinfra.settings import InfraSettings, load_settings
from payplane.devinfra.spire_cli import SpireServerCli
from payplane.devinfra.up import (
    EXAMPLE_FILE,
    Kubectl,
    Platform,
    UpError,
    UpOptions,
    bring_up,
    database_name,
    drop_database,
    example_documents,
    secrets_needed,
)

LOG_LINES_PER_CONTAINER = 8  # the last lines of each container's log, and as many of its notable ones
LOG_CHARS_MAX = 32_000
_NOTABLE = ('"level":"WARNING"', '"level":"ERROR"', '"level":"CRITICAL"')


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test's report ends with the last lines of every container of its platform's pods: the pods'
    directories are removed with the platform, and a failure in CI must say what the processes saw."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    platform = getattr(item, "funcargs", {}).get("platform")
    if report.when == "call" and report.failed and isinstance(platform, Platform):
        report.sections.append(("pod logs (last lines of each container)", pod_log_tails(platform.pods_dir)))


def pod_log_tails(pods_dir: Path) -> str:
    """Each container's last lines, after its last warnings, errors and non-JSON lines (tracebacks, the
    kubelet's start and restart markers)."""
    parts = []
    for log in sorted(pods_dir.glob("*/*.log")):
        lines = log.read_text(errors="replace").splitlines()
        notable = [line for line in lines if not line.startswith("{") or any(n in line for n in _NOTABLE)]
        shown = [*notable[-LOG_LINES_PER_CONTAINER:], "…", *lines[-LOG_LINES_PER_CONTAINER:]]
        parts.append(f"--- {log.parent.name}/{log.name}\n" + "\n".join(line[:400] for line in shown))
    return "\n".join(parts)[-LOG_CHARS_MAX:] or f"(no container logs under {pods_dir})"


@pytest.fixture(scope="module")
def settings() -> InfraSettings:
    settings = load_settings()
    stack.up(settings)  # reuses a running infrastructure; fails with the reason if a component cannot start
    return settings


@contextlib.contextmanager
def running_platform(settings: InfraSettings, options: UpOptions) -> Iterator[Platform]:
    try:
        platform = bring_up(settings, options)
    except BaseException:
        clean_up(settings, options, operator_running=False)
        raise
    try:
        yield platform
    finally:
        clean_up(settings, options, operator_running=True, platform=platform)


def clean_up(
    settings: InfraSettings, options: UpOptions, *, operator_running: bool, platform: Platform | None = None
) -> None:
    """Remove everything the run made, whether or not ``bring_up`` got as far as returning."""
    endpoints = read_endpoints(settings.endpoints_file)
    kubectl = Kubectl(endpoints["PAYPLANE_KUBECTL"], endpoints["KUBECONFIG"])
    ns = options.namespace
    ours = ["paymentrail,ledgershard,fraudpolicy", "--all", "-n", ns, "--ignore-not-found"]
    if operator_running:  # its finalizers remove the topics (deletionPolicy Delete) and the SPIRE entries
        assert platform is not None
        try:
            kubectl.run("delete", *ours, "--timeout=60s")
        except UpError as exc:  # still clean up everything else, then fail the teardown with the reason
            platform.stop()
            clean_up(settings, options, operator_running=False)
            raise AssertionError(f"the operator did not finish deleting the objects: {exc}") from exc
        platform.stop()
    else:  # nobody left to run the finalizers: release the objects, then remove what they made by hand
        for name in kubectl.run("get", ours[0], "-n", ns, "--ignore-not-found", "-o", "name").split():
            kubectl.run("patch", name, "-n", ns, "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
        asyncio.run(_delete_topics(endpoints["KAFKA_BOOTSTRAP"], f"payplane.{options.rail_name}."))
        spire = SpireServerCli(
            Path(endpoints["PAYPLANE_SPIRE_SERVER_BIN"]), Path(endpoints["PAYPLANE_SPIRE_SERVER_SOCKET"])
        )
        for entry in spire.entries():
            if entry.entry_id.startswith(f"payplane.{ns}."):
                spire.delete_entry(entry.entry_id)
    kubectl.run("delete", "namespace", ns, "--ignore-not-found", "--wait=false")
    # pods left on a Node without a kubelet would hold the namespace's deletion
    kubectl.run("delete", "pods", "--all", "-n", ns, "--grace-period=0", "--force", "--ignore-not-found")
    kubectl.run("delete", "node", options.node_name, "--ignore-not-found")
    docs = example_documents(EXAMPLE_FILE.read_text(), options.rail_name)
    for need in secrets_needed(docs):
        if need.kind == "postgres":
            drop_database(endpoints, database_name(ns, need.name))
    shutil.rmtree(settings.state_dir / "kubelet" / options.node_name, ignore_errors=True)


async def _delete_topics(bootstrap: str, prefix: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()
