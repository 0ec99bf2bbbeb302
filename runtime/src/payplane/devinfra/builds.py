"""Cached builds and downloads: Go binaries through the Go module proxy, jars from Maven.

Everything lands under the cache directory keyed by version; a finished build leaves a stamp file so
the next ``up`` skips it in milliseconds. Build output goes to a log file named in any failure.
"""

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from payplane.devinfra.errors import BuildFailedError, MissingToolError
from payplane.devinfra.progress import say

BUILD_TIMEOUT_S = 60 * 60


def require_tool(tool: str, how_to_get: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise MissingToolError(tool, how_to_get)
    return path


def go_env(cache_dir: Path, *, cgo: bool) -> dict[str, str]:
    """Environment for reproducible Go builds that share one module and build cache."""
    return {
        "GOMODCACHE": str(cache_dir / "go" / "mod"),
        "GOCACHE": str(cache_dir / "go" / "build"),
        "GOTOOLCHAIN": "local",
        "GOFLAGS": "-mod=mod",
        "CGO_ENABLED": "1" if cgo else "0",
    }


def run_logged(
    argv: Sequence[str],
    *,
    what: str,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout_s: float = BUILD_TIMEOUT_S,
    user: str | None = None,
) -> str:
    """Run one build step, appending its output to ``log_path``; return stdout on success."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **(env or {})}
    with log_path.open("a") as log:
        log.write(f"\n$ {' '.join(argv)}\n")
        log.flush()
        try:
            result = subprocess.run(
                list(argv),
                env=full_env,
                cwd=cwd,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                timeout=timeout_s,
                check=False,
                user=user,
                group=user,
            )
        except subprocess.TimeoutExpired as exc:
            raise BuildFailedError(f"{what} (timed out after {timeout_s:.0f} s)", str(log_path)) from exc
        log.write(result.stdout)
    if result.returncode != 0:
        raise BuildFailedError(what, str(log_path))
    return result.stdout


def is_stamped(stamp: Path) -> bool:
    return stamp.is_file()


def stamp_done(stamp: Path) -> None:
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text("ok\n")


def fetch_maven_runtime_classpath(*, coordinates: Sequence[tuple[str, str, str]], dest: Path, log_path: Path) -> None:
    """Copy the runtime dependency closure of ``coordinates`` (group, artifact, version) into ``dest``."""
    stamp = dest / ".complete"
    if is_stamped(stamp):
        return
    require_tool("mvn", "apt-get install maven (and a Java 17 runtime)")
    say(f"fetching jars into {dest} (first run only, about 20 s)")
    deps = "".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>"
        for g, a, v in coordinates
    )
    pom = (
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>local.payplane</groupId><artifactId>runtime-classpath</artifactId><version>1</version>"
        f"<packaging>pom</packaging><dependencies>{deps}</dependencies></project>"
    )
    work = dest.parent / (dest.name + ".pom")
    work.mkdir(parents=True, exist_ok=True)
    (work / "pom.xml").write_text(pom)
    run_logged(
        [
            "mvn",
            "-B",
            "-q",
            "-f",
            str(work / "pom.xml"),
            "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={dest}",
        ],
        what=f"jar download into {dest}",
        log_path=log_path,
    )
    stamp_done(stamp)
