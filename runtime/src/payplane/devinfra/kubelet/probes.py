"""Readiness probes as a kubelet runs them: httpGet, tcpSocket, grpc (plaintext health check), exec."""

import http.client
import socket
import subprocess
from collections.abc import Mapping
from typing import Any, Final

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEFAULT_TIMEOUT_S: Final = 1.0


def probe_port(port: int | str, ports: Mapping[str, int]) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    if port not in ports:
        raise ValueError(f"probe names port {port!r}, which the container does not declare")
    return ports[port]


def run_probe(probe: Mapping[str, Any], host: str, ports: Mapping[str, int]) -> bool:
    """True when the probe succeeds once; any failure (refused, timeout, bad status) is False."""
    timeout_s = float(probe.get("timeoutSeconds") or DEFAULT_TIMEOUT_S)
    try:
        if "httpGet" in probe:
            spec = probe["httpGet"]
            port = probe_port(spec["port"], ports)
            target = spec.get("host") or host
            conn_type = http.client.HTTPSConnection if spec.get("scheme") == "HTTPS" else http.client.HTTPConnection
            conn = conn_type(target, port, timeout=timeout_s)
            try:
                headers = {h["name"]: h["value"] for h in spec.get("httpHeaders") or []}
                conn.request("GET", spec.get("path") or "/", headers=headers)
                return 200 <= conn.getresponse().status < 400
            finally:
                conn.close()
        if "tcpSocket" in probe:
            spec = probe["tcpSocket"]
            with socket.create_connection((spec.get("host") or host, probe_port(spec["port"], ports)), timeout_s):
                return True
        if "grpc" in probe:
            return _grpc_serving(host, int(probe["grpc"]["port"]), probe["grpc"].get("service", ""), timeout_s)
        if "exec" in probe:
            done = subprocess.run(probe["exec"]["command"], capture_output=True, timeout=timeout_s, check=False)
            return done.returncode == 0
    except (OSError, ValueError, subprocess.SubprocessError, http.client.HTTPException):
        return False
    return False


def _grpc_serving(host: str, port: int, service: str, timeout_s: float) -> bool:
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
