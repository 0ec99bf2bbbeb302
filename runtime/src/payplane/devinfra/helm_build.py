"""Builds the helm CLI from the Go module proxy, cached by version (the chart's lint/template/install tests).

``helm.sh/helm/v3`` has no ``replace`` directives, so a plain ``go install <module>/cmd/helm@<version>``
builds it into the versioned cache directory. The version is stamped in with the same ``-X`` flag
upstream's Makefile uses; ``helm version`` must report it before the build is stamped complete.
"""

from pathlib import Path

from payplane.devinfra import versions
from payplane.devinfra.builds import go_env, run_logged
from payplane.devinfra.kube_build import BuildDirs, ensure_built, reports_version

HELM_MODULE = "helm.sh/helm/v3"
HELM_VERSION_VARIABLE = "helm.sh/helm/v3/internal/version.version"


def helm_dirs(cache_dir: Path) -> BuildDirs:
    return BuildDirs(cache_dir / f"helm-{versions.HELM}")


def helm_ldflags(version: str) -> str:
    """Without the version variable ``helm version`` reports a development build, and the probe fails."""
    return f"-s -w -buildid= -X {HELM_VERSION_VARIABLE}={version}"


def _helm_binary_ok(helm: Path) -> bool:
    return reports_version([str(helm), "version", "--short"], versions.HELM)


def _build_helm(dirs: BuildDirs, log_path: Path, env: dict[str, str]) -> None:
    dirs.bin.mkdir(parents=True, exist_ok=True)
    run_logged(
        [
            "go",
            "install",
            "-trimpath",
            "-ldflags",
            helm_ldflags(versions.HELM),
            f"{HELM_MODULE}/cmd/helm@{versions.HELM}",
        ],
        what=f"helm {versions.HELM}",
        log_path=log_path,
        env={**env, "GOBIN": str(dirs.bin)},
        cwd=dirs.root,
    )


def ensure_helm(cache_dir: Path, log_path: Path) -> Path:
    """The helm binary (built once, ~3 min on 2 cores; milliseconds when stamped)."""
    dirs = helm_dirs(cache_dir)
    helm = dirs.bin / "helm"
    ensure_built(
        dirs,
        [helm],
        what=f"helm {versions.HELM}",
        cold_duration="~3 min",
        log_path=log_path,
        binaries_ok=lambda: _helm_binary_ok(helm),
        build=lambda: _build_helm(dirs, log_path, go_env(cache_dir, cgo=False)),
    )
    return helm
