"""A container's process over its life (start, exit, backoff, stop) and orphan reaping, with real local
processes (no infrastructure)."""

import os
import sys
import time
from pathlib import Path

from payplane.devinfra.kubelet.podspec import ProcessSpec
from payplane.devinfra.kubelet.processes import ContainerRuntime, reap_orphans
from payplane.devinfra.procs import _process_start_ticks

WAIT_S = 10.0


def spec(code: str, niceness: int = 0) -> ProcessSpec:
    return ProcessSpec(
        container="app",
        image="i",
        argv=(sys.executable, "-c", code),
        env={"PATH": os.environ["PATH"]},
        gid=None,
        ports={},
        readiness_probe=None,
        niceness=niceness,
    )


def wait_exit(runtime: ContainerRuntime) -> None:
    deadline = time.monotonic() + WAIT_S
    while runtime.running and time.monotonic() < deadline:
        runtime.poll(time.monotonic())
        time.sleep(0.02)
    assert not runtime.running, "the process did not exit"


def test_a_failing_container_is_restarted_after_a_backoff_and_counted(tmp_path: Path) -> None:
    runtime = ContainerRuntime(name="app", image="i", pod_dir=tmp_path, restart_policy="Always")
    runtime.start(spec("print('hello'); raise SystemExit(3)"))
    assert runtime.pid_file.exists()
    wait_exit(runtime)
    assert runtime.last_exit is not None
    assert runtime.last_exit.exit_code == 3
    assert not runtime.pid_file.exists()
    assert not runtime.due_to_start(time.monotonic())  # backing off
    assert runtime.view(time.monotonic()).waiting_reason == "CrashLoopBackOff"
    assert runtime.due_to_start(time.monotonic() + 1.5)
    runtime.start(spec("raise SystemExit(3)"))
    assert runtime.restart_count == 1
    wait_exit(runtime)
    assert runtime.next_start_mono_s - time.monotonic() > 1.0  # the second backoff is longer
    assert "hello" in runtime.log_file.read_text()


def test_never_restarted_containers_finish(tmp_path: Path) -> None:
    runtime = ContainerRuntime(name="app", image="i", pod_dir=tmp_path, restart_policy="Never")
    runtime.start(spec("pass"))
    wait_exit(runtime)
    assert runtime.finished
    assert not runtime.due_to_start(time.monotonic() + 100)
    assert runtime.view(time.monotonic()).state() == {"terminated": runtime.last_exit.as_state()}  # type: ignore[union-attr]


def test_stop_sends_sigterm_then_sigkill_after_the_grace(tmp_path: Path) -> None:
    polite = ContainerRuntime(name="polite", image="i", pod_dir=tmp_path, restart_policy="Always")
    polite.start(spec("import time; time.sleep(60)"))
    stubborn = ContainerRuntime(name="stubborn", image="i", pod_dir=tmp_path, restart_policy="Always")
    ignore_sigterm = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN)"
    stubborn.start(spec(ignore_sigterm + "; print('ARM' + 'ED', flush=True); time.sleep(60)"))
    deadline = time.monotonic() + WAIT_S
    while "ARMED" not in stubborn.log_file.read_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    now = time.monotonic()
    assert not polite.stop(5.0, now)
    assert not stubborn.stop(0.5, now)
    while (polite.running or stubborn.running) and time.monotonic() < deadline:
        polite.stop(5.0, time.monotonic())
        stubborn.stop(0.5, time.monotonic())
        time.sleep(0.05)
    assert polite.last_exit is not None
    assert polite.last_exit.signal == 15
    assert stubborn.last_exit is not None
    assert stubborn.last_exit.signal == 9
    assert polite.finished
    assert stubborn.finished


def test_a_new_kubelet_reaps_the_processes_an_old_one_recorded(tmp_path: Path) -> None:
    pod_dir = tmp_path / "ns_pod_uid"
    runtime = ContainerRuntime(name="app", image="i", pod_dir=pod_dir, restart_policy="Always")
    runtime.start(spec("import time; time.sleep(60)"))
    assert runtime.popen is not None
    pid = runtime.popen.pid
    stale = tmp_path / "ns_old_uid" / "app.pid"
    stale.parent.mkdir()
    stale.write_text("999999 1\n")  # a process that no longer exists: ignored, record removed
    assert reap_orphans(tmp_path, grace_s=5.0) == [pid]
    runtime.popen.wait(timeout=WAIT_S)
    assert _process_start_ticks(pid) is None
    assert not runtime.pid_file.exists()
    assert not stale.exists()


def test_a_container_runs_at_the_niceness_of_its_cpu_request_threads_included(tmp_path: Path) -> None:
    runtime = ContainerRuntime(name="app", image="i", pod_dir=tmp_path, restart_policy="Never")
    report = (
        "import os, threading, time; time.sleep(0.3); out = []; "
        "t = threading.Thread(target=lambda: out.append(os.getpriority(os.PRIO_PROCESS, 0))); t.start(); t.join(); "
        "print('NICE', os.getpriority(os.PRIO_PROCESS, 0), out[0], flush=True)"
    )
    runtime.start(spec(report, niceness=7))
    wait_exit(runtime)
    assert f"NICE {os.getpriority(os.PRIO_PROCESS, 0) + 7} {os.getpriority(os.PRIO_PROCESS, 0) + 7}" in (
        runtime.log_file.read_text()
    )
