"""``payplane kubelet``: run the process kubelet in the foreground (SIGTERM or Ctrl-C stops its pods)."""

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Final

from payplane.devinfra.endpoints import read_endpoints
from payplane.devinfra.settings import load_settings

DEFAULT_NODE_NAME: Final = "payplane-local"
DEFAULT_POD_CIDR: Final = "198.18.0.0/16"  # RFC 2544 test-network block; see netaddr


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "kubelet", help="run the pods bound to a local Node as processes (the local infrastructure's API server)"
    )
    parser.add_argument("--node-name", default=DEFAULT_NODE_NAME, help="the Node to register (default %(default)s)")
    parser.add_argument(
        "--namespace",
        action="append",
        default=[],
        dest="namespaces",
        help="run only pods of this namespace (repeatable; default: every namespace)",
    )
    parser.add_argument("--dns-port", type=int, default=0, help="UDP port of the Service resolver (default: any)")
    parser.add_argument(
        "--pod-cidr", default=DEFAULT_POD_CIDR, help="pod addresses, put on the loopback interface (%(default)s)"
    )
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    # imported here: the kubelet needs the kubernetes client, which the runtime image does not carry
    from payplane.devinfra.kubelet.node import KubeletSettings, ProcessKubelet  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    infra = load_settings()
    endpoints = read_endpoints(infra.endpoints_file)
    missing = [k for k in ("KUBECONFIG", "SPIFFE_ENDPOINT_SOCKET", "PAYPLANE_SPIRE_TRUST_DOMAIN") if k not in endpoints]
    if missing:
        print(f"payplane kubelet: {', '.join(missing)} unknown: run `payplane infra up` first", file=sys.stderr)
        return 2
    settings = KubeletSettings(
        node_name=args.node_name,
        kubeconfig=endpoints["KUBECONFIG"],
        kubelet_dir=infra.state_dir / "kubelet" / args.node_name,
        trust_domain=endpoints["PAYPLANE_SPIRE_TRUST_DOMAIN"],
        spire_agent_socket=Path(endpoints["SPIFFE_ENDPOINT_SOCKET"].removeprefix("unix://")),
        namespaces=tuple(args.namespaces),
        pod_cidr=args.pod_cidr,
        dns_port=args.dns_port,
    )
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    ProcessKubelet(settings).run(stopping)
    return 0
