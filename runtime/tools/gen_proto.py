"""Generate payplane's own gRPC code from ``runtime/proto`` into ``runtime/src/payplane/_gen/`` (gitignored).

Run by ``make proto-runtime`` (a prerequisite of ``make setup`` and ``make check``), so a clean clone
generates it. Each ``runtime/proto/payplane/<api>/<file>.proto`` is staged as
``payplane/_gen/<api>/<file>.proto`` so the generated modules import each other as
``payplane._gen.<api>...``; grpcio-tools writes ``*_pb2.py``, ``*_pb2.pyi`` and ``*_pb2_grpc.py``.
A stamp holding the hash of the protos and of this script makes reruns instant.
"""

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGE_PREFIX = "payplane/_gen"
PROTOC_TIMEOUT_S = 300


def stamp_text(protos: list[Path], proto_root: Path) -> str:
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for proto in protos:
        digest.update(str(proto.relative_to(proto_root)).encode())
        digest.update(proto.read_bytes())
    return f"protos={digest.hexdigest()[:24]}\n"


def generate(proto_root: Path, protos: list[Path], out_root: Path) -> None:
    import grpc_tools  # noqa: PLC0415 - a dev-only tool, imported only when generating

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory(prefix="payplane-proto-") as tmp:
        staging = Path(tmp)
        staged = []
        for proto in protos:
            relative = proto.relative_to(proto_root / "payplane")
            target = staging / PACKAGE_PREFIX / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(proto.read_bytes())
            staged.append(str(target.relative_to(staging)))
        argv = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{staging}",
            f"-I{well_known}",
            f"--python_out={out_root}",
            f"--pyi_out={out_root}",
            f"--grpc_python_out={out_root}",
            *staged,
        ]
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=PROTOC_TIMEOUT_S, check=False, cwd=staging
        )
    if result.returncode != 0:
        sys.exit(f"gen_proto: protoc failed:\n{result.stdout}{result.stderr}")


def add_init_files(gen_dir: Path) -> None:
    for directory in [gen_dir, *[p for p in gen_dir.rglob("*") if p.is_dir()]]:
        init = directory / "__init__.py"
        if not init.exists():
            init.write_text('"""Generated at build time; do not edit (see runtime/tools/gen_proto.py)."""\n')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proto", type=Path, required=True, help="the proto root (holding payplane/...)")
    parser.add_argument("--out", type=Path, required=True, help="the source root holding payplane/")
    args = parser.parse_args()
    proto_root, out_root = args.proto.resolve(), args.out.resolve()
    protos = sorted((proto_root / "payplane").rglob("*.proto"))
    gen_dir = out_root / PACKAGE_PREFIX
    stamp = gen_dir / ".stamp"
    wanted = stamp_text(protos, proto_root)
    if stamp.is_file() and stamp.read_text() == wanted:
        return 0
    shutil.rmtree(gen_dir, ignore_errors=True)
    generate(proto_root, protos, out_root)
    add_init_files(gen_dir)
    stamp.write_text(wanted)
    print(f"gen_proto: generated {len(protos)} proto file(s) into {gen_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
