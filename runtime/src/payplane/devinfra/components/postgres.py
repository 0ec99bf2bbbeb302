"""PostgreSQL 15 from Debian's packages, in payplane's own data directory and port."""

import os
import subprocess
from pathlib import Path

from payplane.devinfra import versions
from payplane.devinfra.builds import run_logged
from payplane.devinfra.components.base import Component
from payplane.devinfra.errors import MissingToolError
from payplane.devinfra.procs import ManagedProcess
from payplane.devinfra.waiting import wait_healthy

SUPERUSER = "payplane"
DATABASE = "payplane"
ROOT_CLUSTER_PARENT = Path("/var/lib/payplane/postgres")
SYSTEM_USER = "postgres"


def _bin_dir() -> Path:
    bin_dir = Path(f"/usr/lib/postgresql/{versions.POSTGRES_MAJOR}/bin")
    if not (bin_dir / "postgres").exists():
        raise MissingToolError(
            f"PostgreSQL {versions.POSTGRES_MAJOR}",
            f"apt-get install postgresql-{versions.POSTGRES_MAJOR} (the test setup .ci/run does this)",
        )
    return bin_dir


class Postgres(Component):
    name = "postgres"

    @property
    def cluster_dir(self) -> Path:
        """PostgreSQL refuses to run as root: then the cluster lives where the postgres user reaches it."""
        if os.geteuid() == 0:
            return ROOT_CLUSTER_PARENT / f"cluster-{self.settings.ports.postgres}"
        return self.settings.state_dir / "postgres"

    @property
    def data_dir(self) -> Path:
        return self.cluster_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.cluster_dir / "sock"

    def build(self) -> None:
        _bin_dir()

    def ports(self) -> list[int]:
        return [self.settings.ports.postgres]

    def processes(self) -> list[ManagedProcess]:
        proc = self.process(
            "postgres",
            [
                str(_bin_dir() / "postgres"),
                "-D",
                str(self.data_dir),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"port={self.settings.ports.postgres}",
                "-c",
                f"unix_socket_directories={self.socket_dir}",
                "-c",
                "max_connections=300",
                "-c",
                "shared_buffers=512MB",
                "-c",
                "wal_level=logical",
                "-c",
                "max_prepared_transactions=64",
                "-c",
                "logging_collector=off",
                "-c",
                "log_min_messages=warning",
            ],
        )
        proc.user = self._cluster_owner
        return [proc]

    @property
    def _cluster_owner(self) -> str | None:
        return SYSTEM_USER if os.geteuid() == 0 else None

    def _prepare_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", f"{SYSTEM_USER}:{SYSTEM_USER}", str(self.cluster_dir)], check=True)

    def _initdb(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self._prepare_dirs()
        run_logged(
            [
                str(_bin_dir() / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ],
            what="initdb",
            log_path=self.build_log,
            user=self._cluster_owner,
            cwd=Path("/"),
        )

    def _psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [
                "psql",
                "-X",
                "-qAt",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.settings.ports.postgres),
                "-U",
                SUPERUSER,
                "-d",
                database,
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return result.stdout.strip()

    def healthy(self) -> bool:
        try:
            return self._psql("select 1") == "1"
        except (subprocess.SubprocessError, OSError):
            return False

    def start(self) -> None:
        self._initdb()
        self._prepare_dirs()
        (proc,) = self.processes()
        proc.start()
        wait_healthy(self.name, self.healthy, self.start_timeout_s, proc)
        if self._psql(f"select 1 from pg_database where datname = '{DATABASE}'") != "1":  # noqa: S608 constant
            self._psql(f"create database {DATABASE}")

    def endpoints(self) -> dict[str, str]:
        port = self.settings.ports.postgres
        return {
            "PAYPLANE_POSTGRES_DSN": f"postgresql://{SUPERUSER}@127.0.0.1:{port}/{DATABASE}",
            "PGHOST": "127.0.0.1",
            "PGPORT": str(port),
            "PGUSER": SUPERUSER,
        }
