"""Pod addresses on the loopback interface (iproute2), so every pod has an IP of its own.

The API server refuses loopback (127.0.0.0/8) addresses as endpoints, so pod IPs come from an ordinary
range (default 198.18.0.0/16, the block RFC 2544 reserves for test networks) added to ``lo`` as /32
addresses: reachable from this machine only, and servers of different pods can use the same port.
Adding addresses needs CAP_NET_ADMIN (root), as the local identities already do.
"""

import ipaddress
import subprocess
from typing import Final

DEVICE: Final = "lo"


class AddressError(Exception):
    """``ip addr`` refused; the message carries its answer."""


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise AddressError(f"ip {' '.join(args)}: {done.stderr.strip()} (pod addresses need root and iproute2)")
    return done.stdout


def addresses_in(network: ipaddress.IPv4Network) -> list[str]:
    """The addresses of ``network`` currently on the loopback interface."""
    found = []
    for line in _ip("-4", "-o", "addr", "show", "dev", DEVICE).splitlines():
        fields = line.split()
        if "inet" in fields:
            address = fields[fields.index("inet") + 1].split("/")[0]
            if ipaddress.IPv4Address(address) in network:
                found.append(address)
    return found


def add(address: str) -> None:
    if address not in addresses_in(ipaddress.IPv4Network(f"{address}/32")):
        _ip("addr", "add", f"{address}/32", "dev", DEVICE)


def remove(address: str) -> None:
    if address in addresses_in(ipaddress.IPv4Network(f"{address}/32")):
        _ip("addr", "del", f"{address}/32", "dev", DEVICE)
