"""Alternating runs of the payments benchmark on two revisions of this repository: the way to tell a
change's effect on a machine whose speed moves from minute to minute (docs/benchmarks.md).

    .venv/bin/python -m tests.bench.ab --base HEAD --new . --pairs 3
    .venv/bin/python -m tests.bench.ab --base 7e127e9 --new main --pairs 5 -- --open-rate-per-s 800 --duration-s 20

``--base`` and ``--new`` name git revisions (checked out into temporary worktrees, their gRPC code
generated there) or ``.``, this checkout as it is, uncommitted changes included. Runs alternate base,
new, base, new, …; each is ``tests.bench.payments_bench`` (default arguments: the 1,000/s open loop)
started in its revision's tree, so the harness and every workload it spawns run that revision's code
(``PYTHONPATH``). Each run prints one line (the machine check's reference work, accept p50/p99,
accept→settled p99, CPU per payment of the machine and the busiest processes); the end prints each
side's medians. A run whose replays, counts or ``ledger verify`` failed fails the comparison (exit 1).
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

REPO: Final = Path(__file__).resolve().parents[2]
DEFAULT_BENCH_ARGS: Final = ("--open-rate-per-s", "1000", "--duration-s", "20")
RUN_TIMEOUT_S: Final = 900
MACHINE: Final = "machine (2 cores, everyone's work)"
PROCESSES_SHOWN: Final = (
    "gateway",
    "payment-worker",
    "payment-settler",
    "postgres (payments database)",
    "redis (shared)",
)
_REFERENCE: Final = re.compile(r"reference Python work (\d+) ms")


@dataclass(frozen=True)
class Run:
    label: str
    reference_ms: float  # the machine check's fixed Python work: this machine's speed at the time
    accept_p50_ms: float
    accept_p99_ms: float
    settle_p99_ms: float
    cpu_ms_per_payment: dict[str, float] = field(default_factory=dict)

    def render(self) -> str:
        cpu = ", ".join(f"{name} {self.cpu_ms_per_payment.get(name, 0.0):.3f}" for name in PROCESSES_SHOWN)
        return (
            f"[{self.label}] reference {self.reference_ms:.0f} ms | accept p50 {self.accept_p50_ms:.1f} ms"
            f" p99 {self.accept_p99_ms:.1f} ms | accept→settled p99 {self.settle_p99_ms:.0f} ms"
            f" | CPU ms per payment: machine {self.cpu_ms_per_payment.get(MACHINE, 0.0):.3f}, {cpu}"
        )


def parse_run(label: str, stdout: str) -> Run:
    """The figures of a ``payments_bench --json`` run's last measured loop, from its output."""
    reference = _REFERENCE.search(stdout)
    runs: list[dict[str, Any]] = json.loads(stdout.strip().splitlines()[-1])
    if not runs:
        raise ValueError("the benchmark reported no run")
    last = runs[-1]
    return Run(
        label,
        float(reference.group(1)) if reference else 0.0,
        float(last["accept_p50_ms"]),
        float(last["accept_p99_ms"]),
        float(last["settle_p99_ms"]),
        {name: float(ms) for name, ms in last["cpu_ms_per_payment"].items()},
    )


def medians(runs: Sequence[Run]) -> str:
    """One line per side: the median of each figure over its runs, and its p99s in the order they ran."""
    lines = []
    for label in dict.fromkeys(run.label for run in runs):
        mine = [run for run in runs if run.label == label]
        p99s = ", ".join(f"{run.accept_p99_ms:.1f}" for run in mine)
        lines.append(
            f"{label}: {len(mine)} runs, median accept p50 {statistics.median(r.accept_p50_ms for r in mine):.1f} ms,"
            f" p99 {statistics.median(r.accept_p99_ms for r in mine):.1f} ms ({p99s}),"
            f" accept→settled p99 {statistics.median(r.settle_p99_ms for r in mine):.0f} ms, CPU per payment"
            f" {statistics.median(r.cpu_ms_per_payment.get(MACHINE, 0.0) for r in mine):.3f} ms"
        )
    return "\n".join(lines)


def _git(*args: str, cwd: Path = REPO) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)


@contextmanager
def checked_out(revision: str, tree: Path) -> Iterator[Path]:
    """``tree``, a worktree holding ``revision`` with its gRPC code generated (``.``: this checkout)."""
    if revision == ".":
        yield REPO
        return
    _git("worktree", "add", "--detach", str(tree), revision)
    try:
        subprocess.run(
            [sys.executable, "runtime/tools/gen_proto.py", "--proto", "runtime/proto", "--out", "runtime/src"],
            cwd=tree,
            check=True,
            capture_output=True,
        )
        yield tree
    finally:
        _git("worktree", "remove", "--force", str(tree))


def run_once(label: str, tree: Path, bench_args: Sequence[str]) -> Run:
    result = subprocess.run(
        [sys.executable, "-m", "tests.bench.payments_bench", *bench_args, "--json"],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree / "runtime" / "src")},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"the {label} run failed (exit {result.returncode}):\n{result.stdout[-3000:]}")
    return parse_run(label, result.stdout)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="git revision, or . for this checkout")
    parser.add_argument("--new", required=True, help="git revision, or . for this checkout")
    parser.add_argument("--pairs", type=int, default=3, help="runs of each, alternating")
    parser.add_argument("bench_args", nargs="*", help="after --: arguments of tests.bench.payments_bench")
    args = parser.parse_args(argv)
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    bench_args = args.bench_args or list(DEFAULT_BENCH_ARGS)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="payplane-ab-") as parent:
        trees = (checked_out(args.base, Path(parent) / "base"), checked_out(args.new, Path(parent) / "new"))
        with trees[0] as base_tree, trees[1] as new_tree:
            try:
                for _ in range(args.pairs):
                    for label, tree in (("base", base_tree), ("new", new_tree)):
                        runs.append(run_once(label, tree, bench_args))
                        print(runs[-1].render(), flush=True)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                print(exc, file=sys.stderr)
                return 1
    print(medians(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
