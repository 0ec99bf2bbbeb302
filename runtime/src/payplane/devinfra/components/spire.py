"""SPIRE server and agent, built from source through the Go module proxy, on loopback.

The server keeps its registration entries (sqlite) and CA keys (disk) across restarts, so entries the
operator or tests registered survive ``down``/``up`` and workloads keep trusting the same roots.
The agent holds nothing across restarts: every start gets a fresh one-time join token, which
also makes the stable alias ``spiffe://<td>/payplane/local-node`` point at the new agent. Workload
entries use that alias as their parent, so they never have to change when the agent restarts.
Agents left from earlier starts are evicted, which deletes their stale aliases with them.
"""

import fcntl
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from string import Template
from typing import Final

from payplane.devinfra import versions
from payplane.devinfra.builds import BUILD_TIMEOUT_S, go_env, is_stamped, require_tool, run_logged, stamp_done
from payplane.devinfra.components.base import Component
from payplane.devinfra.errors import BuildFailedError, InfraError
from payplane.devinfra.procs import ManagedProcess
from payplane.devinfra.progress import say
from payplane.devinfra.spire_cli import HEALTHCHECK_TIMEOUT_S, SpireServerCli
from payplane.devinfra.waiting import wait_healthy

MODULE: Final = "github.com/spiffe/spire"
TEMPLATES_DIR: Final = Path(__file__).resolve().parent.parent / "templates"
NODE_ALIAS_PATH: Final = "/payplane/local-node"
JOIN_TOKEN_TTL_S: Final = 300
MIN_CA_TTL_S: Final = 24 * 3600
CA_TTL_PER_SVID_TTL: Final = 6  # SPIRE warns when ca_ttl < 6 x default_x509_svid_ttl
MIN_AGENT_TTL_S: Final = 3600
MAX_UNIX_SOCKET_PATH: Final = 100  # sun_path holds 108 bytes; keep a margin

# The EJBCA UpstreamAuthority plugin imports github.com/Keyfactor/ejbca-go-client-sdk v1.1.0, whose
# module zip the proxy refuses ("This module version is not available"). payplane's server uses its
# own self-signed CA, so the build leaves that one plugin out of the server's catalog.
UNFETCHABLE_PLUGIN_FILE: Final = "pkg/server/catalog/upstreamauthority.go"
UNFETCHABLE_PLUGIN_LINES: Final = (
    '\t"github.com/spiffe/spire/pkg/server/plugin/upstreamauthority/ejbca"\n',
    "\t\tejbca.BuiltIn(),\n",
)


def _render(template_name: str, destination: Path, **values: object) -> None:
    """Render a config template; owner-only from the first byte (the agent's holds a join token)."""
    text = Template((TEMPLATES_DIR / template_name).read_text()).substitute(values)
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.unlink(missing_ok=True)
    with os.fdopen(os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(text)


@contextmanager
def _exclusive_build(lock_path: Path, timeout_s: float, poll_s: float = 1.0) -> Iterator[None]:
    """One build at a time per install dir: concurrent ``up``s (parallel test sessions) would
    otherwise replace the source tree under each other's compiler."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    waited = False
    with lock_path.open("w") as lock_file:
        while True:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    say(f"spire: waiting for the build another `payplane infra up` is running ({lock_path})")
                    waited = True
                if time.monotonic() > deadline:
                    raise InfraError(f"spire: another build held {lock_path} for over {timeout_s:.0f} s") from None
                time.sleep(poll_s)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _reported_version(binary: Path) -> str:
    result = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False)
    return (result.stdout + result.stderr).strip()


class Spire(Component):
    name = "spire"
    start_timeout_s = 60.0

    # --- where things live -------------------------------------------------------------------

    @property
    def install_dir(self) -> Path:
        return self.settings.cache_dir / f"spire-{versions.SPIRE}"

    @property
    def server_bin(self) -> Path:
        return self.install_dir / "bin" / "spire-server"

    @property
    def agent_bin(self) -> Path:
        return self.install_dir / "bin" / "spire-agent"

    @property
    def home(self) -> Path:
        return self.settings.state_dir / "spire"

    @property
    def server_data_dir(self) -> Path:
        """Keyed by trust domain: a datastore and CA of one trust domain never serve another."""
        return self.home / "server" / self.settings.trust_domain

    @property
    def admin_socket(self) -> Path:
        return self.home / "server" / "admin.sock"

    @property
    def agent_data_dir(self) -> Path:
        return self.home / "agent" / "data"

    @property
    def workload_socket(self) -> Path:
        return self.home / "agent" / "workload.sock"

    @property
    def bootstrap_bundle(self) -> Path:
        return self.home / "agent" / "bootstrap-bundle.pem"

    @property
    def node_id(self) -> str:
        """The parent ID for workload entries: an alias of whichever agent currently runs."""
        return f"spiffe://{self.settings.trust_domain}{NODE_ALIAS_PATH}"

    @property
    def cli(self) -> SpireServerCli:
        return SpireServerCli(self.server_bin, self.admin_socket)

    # --- build ---------------------------------------------------------------------------------

    def build(self) -> None:
        stamp = self.install_dir / ".complete"
        if is_stamped(stamp):
            return
        with _exclusive_build(self.install_dir / ".build.lock", BUILD_TIMEOUT_S):
            if not is_stamped(stamp):  # another ``up`` may have finished it while we waited
                self._build()
                stamp_done(stamp)

    def _build(self) -> None:
        require_tool("go", "install Go >= 1.26.6 (SPIRE's go.mod asks for it) and gcc (sqlite needs CGO)")
        say(
            f"spire: building spire-server and spire-agent {versions.SPIRE} from source "
            "(first run only; about 8-10 min on 2 cores, longer while other builds run)"
        )
        source_dir = self._prepare_source()
        self._go_install(source_dir)
        self._verify_versions()

    def _prepare_source(self) -> Path:
        """A writable copy of the released module: built as the main module, with SPIRE's own go.sum.

        ``go install module/cmd@version`` is not used: it looks up the module's deprecation through
        the version list, which the proxy refuses here, and it could not leave a plugin out.
        """
        env = go_env(self.settings.cache_dir, cgo=True)
        listing = run_logged(
            ["go", "mod", "download", "-json", f"{MODULE}@{versions.SPIRE}"],
            what=f"download of {MODULE}@{versions.SPIRE}",
            log_path=self.build_log,
            env=env,
            cwd=self.settings.cache_dir,
        )
        module_dir = Path(json.loads(listing)["Dir"])
        source_dir = self.install_dir / "src"
        shutil.rmtree(source_dir, ignore_errors=True)
        shutil.copytree(module_dir, source_dir)
        for path in [source_dir, *source_dir.rglob("*")]:  # module cache copies are read-only
            path.chmod(path.stat().st_mode | 0o200)
        self._drop_unfetchable_plugin(source_dir)
        return source_dir

    def _drop_unfetchable_plugin(self, source_dir: Path) -> None:
        catalog = source_dir / UNFETCHABLE_PLUGIN_FILE
        text = catalog.read_text()
        for line in UNFETCHABLE_PLUGIN_LINES:
            if text.count(line) != 1:
                raise BuildFailedError(
                    f"SPIRE {versions.SPIRE} (unexpected {UNFETCHABLE_PLUGIN_FILE}: {line.strip()!r} not found once)",
                    str(self.build_log),
                )
            text = text.replace(line, "")
        catalog.write_text(text)

    def _go_install(self, source_dir: Path) -> None:
        version_flag = f"-X {MODULE}/pkg/common/version.gittag={versions.SPIRE.removeprefix('v')}"
        env = {**go_env(self.settings.cache_dir, cgo=True), "GOBIN": str(self.server_bin.parent)}
        run_logged(
            [
                "go",
                "install",
                "-trimpath",
                "-ldflags",
                f"-s -w {version_flag}",
                "./cmd/spire-server",
                "./cmd/spire-agent",
            ],
            what=f"spire-server and spire-agent {versions.SPIRE}",
            log_path=self.build_log,
            env=env,
            cwd=source_dir,
        )

    def _verify_versions(self) -> None:
        expected = versions.SPIRE.removeprefix("v")
        for binary in (self.server_bin, self.agent_bin):
            reported = _reported_version(binary)
            if reported != expected:
                raise BuildFailedError(
                    f"{binary.name} (reports version {reported!r}, expected {expected!r})", str(self.build_log)
                )

    # --- processes and health --------------------------------------------------------------------

    def ports(self) -> list[int]:
        return [self.settings.ports.spire_server, self.settings.ports.spire_agent_health]

    def processes(self) -> list[ManagedProcess]:
        return [
            self.process("spire-server", [str(self.server_bin), "run", "-config", str(self.home / "server.conf")]),
            self.process("spire-agent", [str(self.agent_bin), "run", "-config", str(self.home / "agent.conf")]),
        ]

    def _agent_healthy(self) -> bool:
        result = subprocess.run(
            [str(self.agent_bin), "healthcheck", "-socketPath", str(self.workload_socket)],
            capture_output=True,
            timeout=HEALTHCHECK_TIMEOUT_S,
            check=False,
        )
        return result.returncode == 0

    def healthy(self) -> bool:
        return self.cli.healthy() and self._agent_healthy()

    # --- start ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._check_socket_paths()
        server, agent = self.processes()
        self._write_server_config()
        server.start()
        wait_healthy("spire-server", self.cli.healthy, self.start_timeout_s, server)
        self._evict_previous_agents()
        self._prepare_agent(self.cli.generate_join_token(self.node_id, JOIN_TOKEN_TTL_S))
        agent.start()
        wait_healthy("spire-agent", self._agent_healthy, self.start_timeout_s, agent)

    def _check_socket_paths(self) -> None:
        for socket_path in (self.admin_socket, self.workload_socket):
            if len(str(socket_path)) > MAX_UNIX_SOCKET_PATH:
                raise InfraError(
                    f"spire: socket path {socket_path} is longer than {MAX_UNIX_SOCKET_PATH} "
                    "bytes (a unix socket limit); use a shorter PAYPLANE_STATE_DIR"
                )

    def _write_server_config(self) -> None:
        svid_ttl_s = self.settings.svid_ttl_s
        self.server_data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _render(
            "spire-server.conf.tmpl",
            self.home / "server.conf",
            bind_port=self.settings.ports.spire_server,
            admin_socket=self.admin_socket,
            trust_domain=self.settings.trust_domain,
            data_dir=self.server_data_dir,
            svid_ttl_s=svid_ttl_s,
            agent_ttl_s=max(MIN_AGENT_TTL_S, svid_ttl_s),
            ca_ttl_s=max(MIN_CA_TTL_S, CA_TTL_PER_SVID_TTL * svid_ttl_s),
        )

    def _evict_previous_agents(self) -> None:
        """Agents of earlier starts are gone for good (memory keys); evicting them drops their aliases."""
        for agent_id in self.cli.agent_ids():
            self.cli.evict_agent(agent_id)

    def _prepare_agent(self, join_token: str) -> None:
        shutil.rmtree(self.agent_data_dir, ignore_errors=True)
        self.agent_data_dir.mkdir(parents=True, mode=0o700)
        self.workload_socket.unlink(missing_ok=True)
        self.bootstrap_bundle.write_text(self.cli.bundle_pem())
        _render(
            "spire-agent.conf.tmpl",
            self.home / "agent.conf",
            data_dir=self.agent_data_dir,
            server_port=self.settings.ports.spire_server,
            workload_socket=self.workload_socket,
            trust_domain=self.settings.trust_domain,
            trust_bundle_path=self.bootstrap_bundle,
            health_port=self.settings.ports.spire_agent_health,
            join_token=join_token,
        )

    def endpoints(self) -> dict[str, str]:
        return {
            "SPIFFE_ENDPOINT_SOCKET": f"unix://{self.workload_socket}",
            "PAYPLANE_SPIRE_SERVER_SOCKET": str(self.admin_socket),
            "PAYPLANE_SPIRE_TRUST_DOMAIN": self.settings.trust_domain,
            "PAYPLANE_SPIRE_NODE_ID": self.node_id,
            "PAYPLANE_SPIRE_SERVER_BIN": str(self.server_bin),
        }
