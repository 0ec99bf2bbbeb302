"""``payplane infra up|down|status|env``: the local infrastructure from the command line."""

import argparse
import sys

from payplane.devinfra import stack
from payplane.devinfra.endpoints import read_endpoints
from payplane.devinfra.errors import InfraError
from payplane.devinfra.settings import InfraSettings, load_settings


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    infra = subparsers.add_parser("infra", help="real PostgreSQL, Redis, Kafka, SPIRE and Kubernetes API on loopback")
    verbs = infra.add_subparsers(dest="verb", required=True)
    for verb, text in [
        ("up", "build (cached) and start every component, wait until healthy, write the endpoints file"),
        ("down", "stop what `up` started"),
    ]:
        parser = verbs.add_parser(verb, help=text)
        parser.add_argument("components", nargs="*", help="limit to these components (default: all)")
    verbs.add_parser("status", help="which components run and answer their health probe")
    verbs.add_parser("env", help="print the endpoints as KEY=value lines (eval-able in a shell)")
    infra.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    try:
        if args.verb == "up":
            stack.up(settings, args.components or None)
        elif args.verb == "down":
            stack.down(settings, args.components or None)
        elif args.verb == "status":
            return _print_status(settings)
        elif args.verb == "env":
            for key, value in read_endpoints(settings.endpoints_file).items():
                print(f"export {key}={value}")
    except InfraError as exc:
        print(f"payplane infra {args.verb}: {exc}", file=sys.stderr)
        return 1
    return 0


def _print_status(settings: InfraSettings) -> int:
    all_healthy = True
    for item in stack.status(settings):
        state = "healthy" if item.healthy else ("running, not healthy" if item.running else "down")
        all_healthy = all_healthy and item.healthy
        print(f"{item.name:12} {state:22} {item.detail}")
    return 0 if all_healthy else 3
