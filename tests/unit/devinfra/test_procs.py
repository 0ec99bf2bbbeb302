"""Managed processes: pid files that survive pid reuse, bounded stop, logs."""

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from payplane.devinfra.procs import ManagedProcess, port_is_open


def _sleeper(tmp_path: Path, name: str = "sleeper", *, ignore_term: bool = False) -> ManagedProcess:
    code = "import signal,time\n"
    if ignore_term:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "print('ready', flush=True)\ntime.sleep(60)\n"
    return ManagedProcess(
        name=name, argv=[sys.executable, "-c", code], run_dir=tmp_path / "run", log_dir=tmp_path / "logs"
    )


def test_start_records_pid_and_stop_ends_it(tmp_path: Path) -> None:
    proc = _sleeper(tmp_path)
    pid = proc.start()
    assert proc.recorded_pid() == pid
    assert proc.is_running()
    assert proc.stop(grace_s=5) is True
    assert not proc.is_running()
    assert not proc.pid_file.exists()
    assert proc.stop() is False


def test_stop_escalates_to_sigkill_after_grace(tmp_path: Path) -> None:
    proc = _sleeper(tmp_path, ignore_term=True)
    proc.start()
    # give the child time to install its SIGTERM handler
    for _ in range(100):
        if "ready" in proc.log_tail():
            break
        __import__("time").sleep(0.05)
    assert proc.stop(grace_s=0.5) is True
    assert not proc.is_running()


def test_a_recycled_pid_is_not_ours(tmp_path: Path) -> None:
    """A pid file whose start time does not match the live process is ignored, never signalled."""
    proc = _sleeper(tmp_path)
    proc.run_dir.mkdir(parents=True)
    proc.pid_file.write_text("1 12345\n")  # pid 1 exists, but started at another time
    assert proc.recorded_pid() is None
    assert proc.stop() is False


def test_log_tail_has_the_process_output(tmp_path: Path) -> None:
    proc = ManagedProcess(
        name="echo",
        argv=[sys.executable, "-c", "print('hello from child')"],
        run_dir=tmp_path / "run",
        log_dir=tmp_path / "logs",
    )
    proc.start()
    for _ in range(100):
        if "hello from child" in proc.log_tail():
            break
        __import__("time").sleep(0.05)
    assert "hello from child" in proc.log_tail()


def test_port_is_open() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port_is_open(port)
    assert not port_is_open(port)


def test_a_process_started_with_stop_with_parent_ends_when_its_starter_is_killed(tmp_path: Path) -> None:
    starter_code = (
        "import sys; from pathlib import Path; from payplane.devinfra.procs import ManagedProcess\n"
        "p = ManagedProcess(name='child', argv=[sys.executable, '-c', 'import time; time.sleep(60)'],\n"
        f"    run_dir=Path({str(tmp_path / 'run')!r}), log_dir=Path({str(tmp_path / 'logs')!r}),\n"
        "    stop_with_parent=True)\n"
        "print(p.start(), flush=True)\n"
        "import time; time.sleep(60)\n"
    )
    starter = subprocess.Popen([sys.executable, "-c", starter_code], stdout=subprocess.PIPE, text=True)
    assert starter.stdout is not None
    child_pid = int(starter.stdout.readline())
    child = ManagedProcess(name="child", argv=[], run_dir=tmp_path / "run", log_dir=tmp_path / "logs")
    assert child.recorded_pid() == child_pid
    starter.send_signal(signal.SIGKILL)
    starter.wait(timeout=10)
    deadline = time.monotonic() + 10
    while child.is_running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not child.is_running()
    starter.stdout.close()
