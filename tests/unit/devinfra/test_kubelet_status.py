"""The process kubelet's status building, backoff, addresses, DNS answers and volume files (pure or local)."""

import base64
import ipaddress
import struct
from pathlib import Path
from typing import Any

from payplane.devinfra.kubelet.dns import RCODE_FORMAT_ERROR, RCODE_NXDOMAIN, answer, records_from_slices
from payplane.devinfra.kubelet.node import allocate_ip, decode_secret, materialise
from payplane.devinfra.kubelet.podspec import VolumePlan
from payplane.devinfra.kubelet.status import (
    ContainerView,
    Exit,
    backoff_s,
    pod_phase,
    pod_status,
    restart_wanted,
)

NOW = "2026-11-22T10:00:00Z"
EARLIER = "2026-11-22T09:00:00Z"


def view(**overrides: Any) -> ContainerView:
    fields: dict[str, Any] = {
        "name": "app",
        "image": "payplane-runtime:0.1.0",
        "pid": 42,
        "started_at": EARLIER,
        "ready": True,
        "restart_count": 0,
        "last_exit": None,
    }
    return ContainerView(**{**fields, **overrides})


def status_of(containers: list[ContainerView], previous: dict[str, Any] | None = None) -> dict[str, Any]:
    the_pod = {"status": previous or {}}
    return pod_status(the_pod, containers, pod_ip="198.18.0.2", host_ip="127.0.0.1", start_time=EARLIER, now=NOW)


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_backoff_doubles_from_one_second_up_to_a_minute() -> None:
    assert [backoff_s(n) for n in range(9)] == [0, 1, 2, 4, 8, 16, 32, 60, 60]


def test_restart_policy_decides_which_exits_restart() -> None:
    assert restart_wanted("Always", 0)
    assert restart_wanted("Always", 1)
    assert restart_wanted("OnFailure", 2)
    assert not restart_wanted("OnFailure", 0)
    assert not restart_wanted("Never", 1)


def test_phase_follows_the_containers() -> None:
    assert pod_phase([view(pid=None, started_at=None)]) == "Pending"
    assert pod_phase([view()]) == "Running"
    crashed = Exit(1, EARLIER, NOW)
    assert pod_phase([view(pid=None, last_exit=crashed)]) == "Running"  # between restarts
    assert pod_phase([view(pid=None, last_exit=Exit(0, EARLIER, NOW), finished=True)]) == "Succeeded"
    assert pod_phase([view(pid=None, last_exit=crashed, finished=True)]) == "Failed"


def test_a_running_ready_container_makes_the_pod_ready_with_its_ip() -> None:
    status = status_of([view()])
    assert (status["phase"], status["podIP"], status["podIPs"]) == ("Running", "198.18.0.2", [{"ip": "198.18.0.2"}])
    assert conditions(status)["Ready"]["status"] == "True"
    (container,) = status["containerStatuses"]
    assert container["containerID"] == "process://42"
    assert container["state"] == {"running": {"startedAt": EARLIER}}
    assert (container["ready"], container["started"], container["restartCount"]) == (True, True, 0)


def test_a_crash_looping_container_is_waiting_not_ready_with_its_last_exit() -> None:
    status = status_of(
        [
            view(
                pid=None,
                ready=False,
                restart_count=3,
                last_exit=Exit(1, EARLIER, NOW),
                waiting_reason="CrashLoopBackOff",
                waiting_message="back-off 4s",
            )
        ]
    )
    ready = conditions(status)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "ContainersNotReady")
    (container,) = status["containerStatuses"]
    assert container["state"] == {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 4s"}}
    assert container["lastState"]["terminated"]["exitCode"] == 1
    assert container["restartCount"] == 3
    assert "containerID" not in container


def test_conditions_keep_their_transition_time_until_their_status_changes() -> None:
    first = status_of([view()])
    previous = {"conditions": [{**c, "lastTransitionTime": EARLIER} for c in first["conditions"]]}
    again = status_of([view()], previous)
    assert conditions(again)["Ready"]["lastTransitionTime"] == EARLIER
    flipped = status_of([view(ready=False)], previous)
    assert conditions(flipped)["Ready"]["lastTransitionTime"] == NOW


def test_pod_addresses_are_stable_per_uid_unique_and_keep_the_reported_one() -> None:
    network = ipaddress.IPv4Network("198.18.0.0/29")  # 6 usable
    first = allocate_ip(network, "uid-a", set())
    assert first == allocate_ip(network, "uid-a", set())
    assert allocate_ip(network, "uid-a", {first}) != first
    assert allocate_ip(network, "uid-b", set(), preferred="198.18.0.5") == "198.18.0.5"
    assert allocate_ip(network, "uid-b", set(), preferred="127.0.0.9") != "127.0.0.9"
    used: set[str] = set()
    for n in range(6):
        used.add(allocate_ip(network, f"uid-{n}", used))
    assert len(used) == 6
    assert all(ipaddress.IPv4Address(a) in network for a in used)


def test_secrets_are_decoded_and_volumes_written_only_when_changed(tmp_path: Path) -> None:
    assert decode_secret({"data": {"dsn": base64.b64encode(b"postgresql://x").decode()}}) == {"dsn": "postgresql://x"}
    materialise(tmp_path, [VolumePlan("config", files={"a.json": b"1", "b.json": b"2"})])
    written = tmp_path / "volumes" / "config"
    stamp = (written / "a.json").stat().st_mtime_ns
    materialise(tmp_path, [VolumePlan("config", files={"a.json": b"1"})])
    assert sorted(p.name for p in written.iterdir()) == ["a.json"]  # b.json left the ConfigMap
    assert (written / "a.json").stat().st_mtime_ns == stamp
    materialise(tmp_path, [VolumePlan("config", files={"a.json": b"3"})])
    assert (written / "a.json").read_bytes() == b"3"


def _query(name: str, qtype: int = 1) -> bytes:
    labels = b"".join(bytes([len(part)]) + part.encode() for part in name.split("."))
    return struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + labels + b"\x00" + struct.pack("!HH", qtype, 1)


def test_services_resolve_to_their_ready_endpoints_only() -> None:
    slices = [
        {
            "metadata": {"namespace": "payments", "labels": {"kubernetes.io/service-name": "w"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["198.18.0.9"], "conditions": {"ready": True}},
                {"addresses": ["198.18.0.3"]},
                {"addresses": ["198.18.0.4"], "conditions": {"ready": False}},
            ],
        }
    ]
    records = records_from_slices(slices)
    assert records["w.payments.svc"] == ["198.18.0.3", "198.18.0.9"]
    assert records["w.payments.svc.cluster.local"] == records["w.payments.svc"]
    reply = answer(_query("W.payments.svc"), records)
    query_id, flags, _, answers, _, _ = struct.unpack_from("!HHHHHH", reply)
    assert (query_id, flags & 0xF, answers) == (7, 0, 2)
    assert reply.endswith(bytes([198, 18, 0, 9]))
    assert struct.unpack_from("!HHHHHH", answer(_query("w.payments.svc", qtype=28), records))[3] == 0  # AAAA: none
    assert struct.unpack_from("!H", answer(_query("other.payments.svc"), records), 2)[0] & 0xF == RCODE_NXDOMAIN
    assert struct.unpack_from("!H", answer(b"\x00\x07garbage", records), 2)[0] & 0xF == RCODE_FORMAT_ERROR
