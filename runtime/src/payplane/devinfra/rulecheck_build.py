"""Builds ``rulecheck`` (``rulecheck/main.go``): the chart's alert rules and dashboard queries checked by
Prometheus's own rule loader and PromQL parser, pulled from the Go module proxy.

A throwaway module under the cache directory requires ``github.com/prometheus/prometheus`` at the pinned
version and builds the one source file; the directory is keyed by that version and a hash of the source,
so an edit of ``main.go`` builds a new binary. The build is stamped once the binary checks an expression.
"""

import hashlib
import shutil
import subprocess
from pathlib import Path

from payplane.devinfra import versions
from payplane.devinfra.builds import go_env, run_logged
from payplane.devinfra.kube_build import BuildDirs, ensure_built

PROMETHEUS_MODULE = "github.com/prometheus/prometheus"
SOURCE = Path(__file__).resolve().parent / "rulecheck" / "main.go"
PROBE_TIMEOUT_S = 30.0


def rulecheck_dirs(cache_dir: Path) -> BuildDirs:
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:8]
    return BuildDirs(cache_dir / f"rulecheck-{versions.PROMETHEUS_MODULE}-{digest}")


def rulecheck_binary(cache_dir: Path) -> Path:
    return rulecheck_dirs(cache_dir).bin / "rulecheck"


def _binary_ok(binary: Path) -> bool:
    """It parses a valid expression and says so."""
    try:
        result = subprocess.run(
            [str(binary), "exprs"],
            input="sum(rate(up[5m]))\n",
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and "1 expressions" in result.stdout


def _build(dirs: BuildDirs, log_path: Path, env: dict[str, str]) -> None:
    dirs.src.mkdir(parents=True, exist_ok=True)
    dirs.bin.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SOURCE, dirs.src / "main.go")
    if not (dirs.src / "go.mod").exists():
        run_logged(
            ["go", "mod", "init", "local/rulecheck"], what="go mod init", log_path=log_path, env=env, cwd=dirs.src
        )
    run_logged(
        ["go", "get", f"{PROMETHEUS_MODULE}@{versions.PROMETHEUS_MODULE}"],
        what=f"go get {PROMETHEUS_MODULE}@{versions.PROMETHEUS_MODULE}",
        log_path=log_path,
        env=env,
        cwd=dirs.src,
    )
    run_logged(
        ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(dirs.bin / "rulecheck"), "."],
        what="rulecheck",
        log_path=log_path,
        env=env,
        cwd=dirs.src,
    )


def ensure_rulecheck(cache_dir: Path, log_path: Path) -> Path:
    """The rulecheck binary (built once, about a minute; milliseconds when stamped)."""
    dirs = rulecheck_dirs(cache_dir)
    binary = dirs.bin / "rulecheck"
    ensure_built(
        dirs,
        [binary],
        what=f"rulecheck (Prometheus {versions.PROMETHEUS_MODULE})",
        cold_duration="~1 min",
        log_path=log_path,
        binaries_ok=lambda: _binary_ok(binary),
        build=lambda: _build(dirs, log_path, go_env(cache_dir, cgo=False)),
    )
    return binary
