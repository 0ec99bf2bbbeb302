"""Generate the SPIRE Server API client stubs the operator uses, from the published spire-api-sdk module.

Run by ``make proto`` (which ``make setup`` and ``make check`` depend on), so a clean clone generates them:

1. ``go mod download -json github.com/spiffe/spire-api-sdk@<version>`` into the payplane cache
   (``$PAYPLANE_CACHE_DIR/go/mod``, default ``~/.cache/payplane/go/mod``), through the Go module proxy;
2. the ``.proto`` files the operator needs (the shared types and the Entry service) are copied into a
   staging tree under ``payplane_operator/_gen/`` with their imports rewritten to match, so the generated
   modules import each other as ``payplane_operator._gen.spire.api...`` (no top-level ``spire`` package);
3. grpcio-tools writes ``*_pb2.py``, ``*_pb2.pyi`` and ``*_pb2_grpc.py`` into
   ``operator/src/payplane_operator/_gen/`` (gitignored, excluded from ruff and mypy).

A stamp file naming the version and this script's hash makes reruns instant; any change regenerates.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

MODULE = "github.com/spiffe/spire-api-sdk"
PACKAGE_PREFIX = "payplane_operator/_gen"
# The types the Entry API uses, and the Entry service itself.
PROTO_GLOBS = ("spire/api/types/*.proto", "spire/api/server/entry/v1/entry.proto")
GO_TIMEOUT_S = 600
PROTOC_TIMEOUT_S = 300
_IMPORT = re.compile(r'^import "spire/', re.MULTILINE)


def cache_dir() -> Path:
    configured = os.environ.get("PAYPLANE_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "payplane"


def download_module(version: str) -> Path:
    """The module's source directory in the payplane Go module cache (downloaded once)."""
    if shutil.which("go") is None:
        sys.exit("gen_spire_api: Go is required to download the SPIRE API module (not found on PATH)")
    env = {
        **os.environ,
        "GOMODCACHE": str(cache_dir() / "go" / "mod"),
        "GOFLAGS": "-mod=mod",
        "GOTOOLCHAIN": "local",
        "GO111MODULE": "on",
    }
    result = subprocess.run(
        ["go", "mod", "download", "-json", f"{MODULE}@{version}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=GO_TIMEOUT_S,
        check=False,
        cwd=tempfile.gettempdir(),
    )
    if result.returncode != 0:
        sys.exit(f"gen_spire_api: go mod download {MODULE}@{version} failed:\n{result.stdout}{result.stderr}")
    info = json.loads(result.stdout)
    if info.get("Error"):
        sys.exit(f"gen_spire_api: go mod download {MODULE}@{version}: {info['Error']}")
    return Path(info["Dir"])


def stage_protos(module_dir: Path, staging: Path) -> list[Path]:
    """Copy the needed protos under ``staging/payplane_operator/_gen/`` with imports rewritten."""
    proto_root = module_dir / "proto"
    staged: list[Path] = []
    for pattern in PROTO_GLOBS:
        for source in sorted(proto_root.glob(pattern)):
            target = staging / PACKAGE_PREFIX / source.relative_to(proto_root)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(_IMPORT.sub(f'import "{PACKAGE_PREFIX}/spire/', source.read_text()))
            staged.append(target)
    if not staged:
        sys.exit(f"gen_spire_api: no .proto files matched {PROTO_GLOBS} under {proto_root}")
    return staged


def generate(staging: Path, staged: list[Path], out_root: Path) -> None:
    import grpc_tools  # noqa: PLC0415 - a dev-only tool, imported only when generating

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    argv = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{staging}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *[str(path.relative_to(staging)) for path in staged],
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=PROTOC_TIMEOUT_S, check=False, cwd=staging)
    if result.returncode != 0:
        sys.exit(f"gen_spire_api: protoc failed:\n{result.stdout}{result.stderr}")


def add_init_files(gen_dir: Path) -> None:
    """Regular packages (not namespace packages), so setuptools ships them and mypy resolves them."""
    for directory in [gen_dir, *[p for p in gen_dir.rglob("*") if p.is_dir()]]:
        init = directory / "__init__.py"
        if not init.exists():
            init.write_text('"""Generated at build time; do not edit (see operator/tools/gen_spire_api.py)."""\n')


def stamp_text(version: str) -> str:
    script_hash = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    return f"{MODULE}@{version} generator={script_hash}\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True, help="spire-api-sdk module version, e.g. v1.15.2")
    parser.add_argument("--out", type=Path, required=True, help="the source root holding payplane_operator/")
    args = parser.parse_args()

    out_root = args.out.resolve()
    gen_dir = out_root / PACKAGE_PREFIX
    stamp = gen_dir / ".stamp"
    wanted = stamp_text(args.version)
    if stamp.is_file() and stamp.read_text() == wanted:
        return 0
    module_dir = download_module(args.version)
    shutil.rmtree(gen_dir, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="payplane-proto-") as tmp:
        staging = Path(tmp)
        generate(staging, stage_protos(module_dir, staging), out_root)
    add_init_files(gen_dir)
    stamp.write_text(wanted)
    print(f"gen_spire_api: generated {MODULE}@{args.version} stubs into {gen_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
