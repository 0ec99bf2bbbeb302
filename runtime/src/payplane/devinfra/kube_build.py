"""Builds etcd and the Kubernetes control-plane binaries from the Go module proxy, cached by version.

Neither can be ``go install``-ed: both root modules carry ``replace`` directives (Kubernetes points its
31 staging modules at ``./staging/src``; etcd's server points its siblings at ``../``). So each is built
from a throwaway module under the cache directory that requires the upstream module and, for Kubernetes,
replaces every staging module with its published ``v0.<minor>.<patch>`` twin. The staging list is read
from the release's own go.mod, so it is right for whichever version ``versions.py`` pins.

A build ends by running each binary's version command; only then is the stamp written, and the next
``up`` skips the whole step. Binaries that already report the pinned version are stamped without a build.
"""

import contextlib
import fcntl
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from payplane.devinfra import versions
from payplane.devinfra.builds import BUILD_TIMEOUT_S, go_env, is_stamped, require_tool, run_logged, stamp_done
from payplane.devinfra.errors import BuildFailedError, InfraError
from payplane.devinfra.progress import say

KUBERNETES_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
KUBERNETES_MODULE = "k8s.io/kubernetes"
ETCD_SERVER_MODULE = "go.etcd.io/etcd/server/v3"  # its root package is ``package main`` (server/main.go)
VERSION_PROBE_TIMEOUT_S = 30.0
LOCK_POLL_S = 5.0
GO_HOW_TO_GET = "install Go >= 1.26 from go.dev/dl and put it on PATH"

# Upstream's release flags (hack/lib/golang.sh): static, no debug info, reproducible.
KUBERNETES_BUILD_TAGS = "selinux,notest"
VERSION_PACKAGES = ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")

_STAGING_REPLACE = re.compile(r"^\s*(?:replace\s+)?(\S+)\s+=>\s+\./staging/src/", re.MULTILINE)
_GO_DIRECTIVE = re.compile(r"^go\s+(\S+)\s*$", re.MULTILINE)
_GODEBUG_DEFAULT = re.compile(r"^godebug\s+default=(\S+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class BuildDirs:
    """A versioned build area: ``src`` (the throwaway module), ``bin`` and the completion stamp."""

    root: Path

    @property
    def src(self) -> Path:
        return self.root / "src"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def stamp(self) -> Path:
        return self.root / ".complete"


def kubernetes_dirs(cache_dir: Path) -> BuildDirs:
    return BuildDirs(cache_dir / f"k8s-{versions.KUBERNETES}")


def etcd_dirs(cache_dir: Path) -> BuildDirs:
    return BuildDirs(cache_dir / f"etcd-{versions.ETCD}")


def reports_version(argv: list[str], expected: str) -> bool:
    """True if the command runs and its output mentions ``expected`` (e.g. ``v1.34.4``)."""
    try:
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=VERSION_PROBE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and expected in result.stdout


def _kubernetes_version_argvs(bin_dir: Path) -> list[list[str]]:
    servers = [[str(bin_dir / name), "--version"] for name in KUBERNETES_COMMANDS if name != "kubectl"]
    return [*servers, [str(bin_dir / "kubectl"), "version", "--client"]]


def _kubernetes_binaries_ok(bin_dir: Path) -> bool:
    return all(reports_version(argv, versions.KUBERNETES) for argv in _kubernetes_version_argvs(bin_dir))


def _etcd_binary_ok(etcd: Path) -> bool:
    return reports_version([str(etcd), "--version"], versions.ETCD.removeprefix("v"))


def staging_modules(kubernetes_go_mod: str) -> list[str]:
    """The modules Kubernetes' go.mod replaces with ``./staging/src/...`` (31 of them in 1.32-1.36)."""
    return _STAGING_REPLACE.findall(kubernetes_go_mod)


def go_mod_edit_flags(kubernetes_go_mod: str, staging_version: str) -> list[str]:
    """``go mod edit`` flags mirroring upstream's go/godebug lines and pinning every staging module."""
    flags = []
    if go_line := _GO_DIRECTIVE.search(kubernetes_go_mod):
        flags.append(f"-go={go_line.group(1)}")
    if godebug := _GODEBUG_DEFAULT.search(kubernetes_go_mod):
        flags.append(f"-godebug=default={godebug.group(1)}")
    flags += [f"-replace={module}={module}@{staging_version}" for module in staging_modules(kubernetes_go_mod)]
    return flags


def kubernetes_ldflags(version: str) -> str:
    """Without these ``--version`` prints ``v0.0.0-master+$Format:%H$`` and version probes fail."""
    minor = version.split(".")[1]
    flags = ["-s", "-w", "-buildid="]
    for package in VERSION_PACKAGES:
        flags += [
            f"-X {package}.gitVersion={version}",
            f"-X {package}.gitMajor=1",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
            f"-X {package}.buildDate=1970-01-01T00:00:00Z",
        ]
    return " ".join(flags)


def _init_module(dirs: BuildDirs, module_name: str, env: dict[str, str], log_path: Path) -> None:
    dirs.src.mkdir(parents=True, exist_ok=True)
    dirs.bin.mkdir(parents=True, exist_ok=True)
    if not (dirs.src / "go.mod").exists():
        run_logged(["go", "mod", "init", module_name], what="go mod init", log_path=log_path, env=env, cwd=dirs.src)


def _kubernetes_go_mod(env: dict[str, str], dirs: BuildDirs, log_path: Path) -> str:
    out = run_logged(
        ["go", "mod", "download", "-json", f"{KUBERNETES_MODULE}@{versions.KUBERNETES}"],
        what=f"download of {KUBERNETES_MODULE}@{versions.KUBERNETES}",
        log_path=log_path,
        env=env,
        cwd=dirs.src,
    )
    match = re.search(r'"GoMod":\s*"([^"]+)"', out)
    if match is None:
        raise BuildFailedError(f"{KUBERNETES_MODULE}@{versions.KUBERNETES} (no GoMod in download)", str(log_path))
    return Path(match.group(1)).read_text()


def _build_kubernetes(dirs: BuildDirs, log_path: Path, env: dict[str, str]) -> None:
    version = versions.KUBERNETES
    staging_version = "v0." + version.removeprefix("v1.")
    _init_module(dirs, "local/kbuild", env, log_path)
    edit_flags = go_mod_edit_flags(_kubernetes_go_mod(env, dirs, log_path), staging_version)
    run_logged(["go", "mod", "edit", *edit_flags], what="go mod edit", log_path=log_path, env=env, cwd=dirs.src)
    packages = [f"{KUBERNETES_MODULE}/cmd/{name}" for name in KUBERNETES_COMMANDS]
    run_logged(
        ["go", "get", "-tool", *(f"{p}@{version}" for p in packages)],
        what=f"go get Kubernetes {version}",
        log_path=log_path,
        env=env,
        cwd=dirs.src,
    )
    run_logged(
        [
            "go",
            "build",
            "-trimpath",
            "-tags",
            KUBERNETES_BUILD_TAGS,
            "-ldflags",
            kubernetes_ldflags(version),
            "-o",
            f"{dirs.bin}/",
            *packages,
        ],
        what=f"Kubernetes {version}",
        log_path=log_path,
        env=env,
        cwd=dirs.src,
    )


def ensure_kubernetes(cache_dir: Path, log_path: Path) -> Path:
    """The directory holding kube-apiserver, kube-controller-manager, kube-scheduler and kubectl."""
    dirs = kubernetes_dirs(cache_dir)
    ensure_built(
        dirs,
        [dirs.bin / name for name in KUBERNETES_COMMANDS],
        what=f"Kubernetes {versions.KUBERNETES}",
        cold_duration="~10 min",
        log_path=log_path,
        binaries_ok=lambda: _kubernetes_binaries_ok(dirs.bin),
        build=lambda: _build_kubernetes(dirs, log_path, go_env(cache_dir, cgo=False)),
    )
    return dirs.bin


def _build_etcd(dirs: BuildDirs, log_path: Path, env: dict[str, str]) -> None:
    # The server's go.mod already requires its sibling modules at the same version: no replaces needed.
    _init_module(dirs, "local/etcdbuild", env, log_path)
    run_logged(
        ["go", "get", "-tool", f"{ETCD_SERVER_MODULE}@{versions.ETCD}"],
        what=f"go get etcd {versions.ETCD}",
        log_path=log_path,
        env=env,
        cwd=dirs.src,
    )
    run_logged(
        ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(dirs.bin / "etcd"), ETCD_SERVER_MODULE],
        what=f"etcd {versions.ETCD}",
        log_path=log_path,
        env=env,
        cwd=dirs.src,
    )


def ensure_etcd(cache_dir: Path, log_path: Path) -> Path:
    """The etcd server binary."""
    dirs = etcd_dirs(cache_dir)
    etcd = dirs.bin / "etcd"
    ensure_built(
        dirs,
        [etcd],
        what=f"etcd {versions.ETCD}",
        cold_duration="~1.5 min",
        log_path=log_path,
        binaries_ok=lambda: _etcd_binary_ok(etcd),
        build=lambda: _build_etcd(dirs, log_path, go_env(cache_dir, cgo=False)),
    )
    return etcd


@contextlib.contextmanager
def _build_lock(dirs: BuildDirs, what: str, timeout_s: float = BUILD_TIMEOUT_S) -> Iterator[None]:
    """Parallel ``up``s (several test sessions at once) must not build into one directory together:
    the second waits, bounded, for the first and then finds its stamp."""
    dirs.root.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    with (dirs.root / ".build.lock").open("w") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise InfraError(f"another build of {what} held {lock.name} for {timeout_s:.0f} s") from None
                say(f"waiting for another process's build of {what} to finish")
                time.sleep(LOCK_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_built(
    dirs: BuildDirs,
    binaries: list[Path],
    *,
    what: str,
    cold_duration: str,
    log_path: Path,
    binaries_ok: Callable[[], bool],
    build: Callable[[], None],
) -> None:
    """Stamped → nothing to do (milliseconds). Else, under the lock: binaries that already report the
    pinned version are just stamped; otherwise build, verify the version, stamp."""
    if is_stamped(dirs.stamp) and all(binary.is_file() for binary in binaries):
        return
    with _build_lock(dirs, what):
        if not binaries_ok():
            require_tool("go", GO_HOW_TO_GET)
            say(f"building {what} (first run only, {cold_duration} on 2 cores); log {log_path}")
            build()
            if not binaries_ok():
                raise BuildFailedError(f"{what} (the binaries do not report that version)", str(log_path))
        stamp_done(dirs.stamp)
