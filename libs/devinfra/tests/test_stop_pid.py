"""`stop_pid` returns once the process is gone, also when it had to be killed (a process that ignores SIGTERM)."""

from __future__ import annotations

import subprocess
import sys

from leaky_devinfra.infra import pid_alive, stop_pid

IGNORES_SIGTERM = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def test_a_process_that_ignores_sigterm_is_killed_and_gone_when_stop_returns() -> None:
    proc = subprocess.Popen([sys.executable, "-c", IGNORES_SIGTERM], stdout=subprocess.PIPE)
    try:
        assert (
            proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        )  # SIGTERM is ignored from here
        stop_pid(proc.pid, timeout=0.2)  # by PID alone, as `stack.py down` stops what another process started
        assert not pid_alive(proc.pid)
        assert proc.wait(timeout=5) == -9
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
