"""``payplane up``: bring the platform up (``up.bring_up``), start the demo load, say where to look,
report progress every 10 s, and on Ctrl-C stop what it started."""

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Final

import aiohttp

from payplane.devinfra import stack
from payplane.devinfra.demo_load import REQUEST_TIMEOUT_S, DemoLoad, DemoLoadError
from payplane.devinfra.errors import InfraError
from payplane.devinfra.progress import say
from payplane.devinfra.settings import load_settings
from payplane.devinfra.up import DEFAULT_NAMESPACE, Platform, UpOptions, bring_up, where_to_look

PROGRESS_INTERVAL_S: Final = 10.0
DEFAULT_RATE_PER_S: Final = 5.0
RATE_MAX_PER_S: Final = 200.0


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "up", help="the platform on this machine: infrastructure, operator, process kubelet, example rail, demo load"
    )
    parser.add_argument("--namespace", default=DEFAULT_NAMESPACE, help="namespace of the example rail (%(default)s)")
    parser.add_argument(
        "--rate", type=float, default=DEFAULT_RATE_PER_S, help="demo payments per second (%(default)s; 0: none)"
    )
    parser.add_argument("--infra-down", action="store_true", help="also stop the infrastructure on exit")
    parser.set_defaults(handler=main)


async def _run_load(platform: Platform, rate_per_s: float) -> int:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    urls = await asyncio.to_thread(platform.gateway_urls)

    async def refresh_gateways() -> None:
        nonlocal urls
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), PROGRESS_INTERVAL_S)
            with contextlib.suppress(InfraError):
                urls = await asyncio.to_thread(platform.gateway_urls) or urls

    load = DemoLoad(lambda: urls, platform.api_key, platform.currency)
    refresher = asyncio.create_task(refresh_gateways())
    try:
        if rate_per_s <= 0:  # no load, but two accounts for the printed curl example
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)) as http:
                await load.open_accounts(http)
            print(where_to_look(platform, load.source, load.destination, 0), flush=True)
            await stopping.wait()
            return 0
        say("demo load: two accounts, then a first payment through gateway → worker → Kafka → ledger writer")
        runner = asyncio.create_task(load.run(stopping, rate_per_s))
        while not load.source or not load.destination or load.stats.created == 0:
            if runner.done():
                await runner  # raises what stopped it
                return 0
            await asyncio.sleep(0.2)
        print(where_to_look(platform, load.source, load.destination, rate_per_s), flush=True)
        while not runner.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(runner), PROGRESS_INTERVAL_S)
            say(load.stats.summary())
        await runner
        return 0
    finally:
        stopping.set()
        await refresher


def main(args: argparse.Namespace) -> int:
    if not 0 <= args.rate <= RATE_MAX_PER_S:
        print(f"payplane up: --rate must be within 0..{RATE_MAX_PER_S:g}", file=sys.stderr)
        return 2
    settings = load_settings()
    try:
        platform = bring_up(settings, UpOptions(namespace=args.namespace))
    except (InfraError, KeyboardInterrupt) as exc:
        print(f"payplane up: {exc}", file=sys.stderr)
        return 1
    try:
        return asyncio.run(_run_load(platform, args.rate))
    except DemoLoadError as exc:
        print(f"payplane up: {exc}; pod logs under {platform.pods_dir}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        say("stopping the kubelet (and its pods) and the operator")
        platform.stop()
        if args.infra_down:
            stack.down(settings)
