"""A grpc.aio mTLS client with its own SVID: calls ``WhoAmI/Call`` and prints one JSON summary.

``--calls N`` makes N calls. ``--until-rotations K`` calls continuously until both its own SVID and
the server's have changed at least K times (as the server observed them), or ``--max-duration-s``
passed. Every failure is recorded with its status code; the test decides what is acceptable.
"""

import argparse
import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import grpc
import grpc.aio

from payplane.adapters.grpc_mtls import RotatingChannel
from payplane.adapters.svid import SvidSource

METHOD = "/payplane.test.WhoAmI/Call"
CALL_TIMEOUT_S = 5.0
CALL_INTERVAL_S = 0.05

T = TypeVar("T")


def _append_if_new(seen: list[T], value: T) -> None:
    if not seen or seen[-1] != value:
        seen.append(value)


@dataclass
class Summary:
    spiffe_id: str
    calls_ok: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    callers: list[str] = field(default_factory=list)  # distinct, in order seen by the server
    caller_serials: list[int] = field(default_factory=list)
    server_serials: list[int] = field(default_factory=list)
    channel_generations: list[int] = field(default_factory=list)

    def record(self, answer: dict[str, Any], generation: int) -> None:
        self.calls_ok += 1
        _append_if_new(self.callers, str(answer["caller"]))
        _append_if_new(self.caller_serials, int(answer["caller_serial"]))
        _append_if_new(self.server_serials, int(answer["server_serial"]))
        _append_if_new(self.channel_generations, generation)

    def rotations_seen(self) -> int:
        return min(len(self.caller_serials), len(self.server_serials)) - 1


async def call_once(channels: RotatingChannel, summary: Summary) -> None:
    channel = channels.channel()
    try:
        reply = await channel.unary_unary(METHOD, None, None)(b"", timeout=CALL_TIMEOUT_S)
    except grpc.aio.AioRpcError as exc:
        summary.failures.append({"code": exc.code().name, "details": exc.details() or ""})
        return
    summary.record(json.loads(reply), channels.generation)


async def run(target: str, calls: int, until_rotations: int, max_duration_s: float) -> Summary:
    with SvidSource() as source:
        channels = RotatingChannel(source, target, old_channel_grace_s=2.0)
        summary = Summary(spiffe_id=source.material().spiffe_id)
        deadline = time.monotonic() + max_duration_s
        try:
            if calls:
                for _ in range(calls):
                    await call_once(channels, summary)
            else:
                while summary.rotations_seen() < until_rotations and time.monotonic() < deadline:
                    await call_once(channels, summary)
                    await asyncio.sleep(CALL_INTERVAL_S)
        finally:
            await channels.close()
        return summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True, help="localhost:<port>")
    parser.add_argument("--calls", type=int, default=0)
    parser.add_argument("--until-rotations", type=int, default=0)
    parser.add_argument("--max-duration-s", type=float, default=60.0)
    args = parser.parse_args()
    summary = asyncio.run(run(args.target, args.calls, args.until_rotations, args.max_duration_s))
    print(json.dumps(asdict(summary)), flush=True)


if __name__ == "__main__":
    main()
