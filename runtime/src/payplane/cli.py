"""The ``payplane`` command: one CLI for the whole product."""

import argparse
import sys
from collections.abc import Sequence

from payplane.devinfra import cli as infra_cli
from payplane.devinfra import up_cli
from payplane.devinfra.kubelet import cli as kubelet_cli
from payplane.ops import clients_cli, ledger_cli
from payplane.services import gateway, ledger_relay, ledger_writer, payment_settler, payment_worker


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="payplane", description="payplane: payments on Kubernetes")
    subparsers = parser.add_subparsers(dest="command", required=True)
    infra_cli.add_parser(subparsers)
    up_cli.add_parser(subparsers)
    kubelet_cli.add_parser(subparsers)
    ledger_cli.add_parser(subparsers)
    ledger_writer.add_parser(subparsers)
    ledger_relay.add_parser(subparsers)
    payment_worker.add_parser(subparsers)
    payment_settler.add_parser(subparsers)
    gateway.add_parser(subparsers)
    clients_cli.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = args.handler
    exit_code: int = handler(args)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
