"""Fixtures of the security tests: a whole local stack started here (on free ports, with its run directory,
logs, spool and infrastructure URLs at hand) that exports its spans to an OTLP sink inside the test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from leaky_devinfra.infra import pid_alive

ROOT = Path(__file__).resolve().parents[2]
STACK_SCRIPT = ROOT / "deploy" / "local" / "stack.py"


@dataclass
class OtlpSink:
    """An OTLP/HTTP receiver that keeps every export body as it arrived (protobuf bytes)."""

    url: str
    bodies: list[bytes] = field(default_factory=list)

    def received(self) -> bytes:
        """Everything exported so far, concatenated."""
        return b"\n".join(list(self.bodies))


@pytest.fixture(scope="session")
def otlp_sink() -> Iterator[OtlpSink]:
    sink = OtlpSink(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            sink.bodies.append(self.rfile.read(length))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    sink.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()


@dataclass(frozen=True)
class LiveStack:
    """A stack started by `deploy/local/stack.py up` for this test session."""

    gateway_url: str
    admin_key: str
    run_dir: Path
    state: dict[str, object]


def _read_env(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        out[key.strip()] = value.strip()
    return out


@pytest.fixture(scope="session")
def traced_stack(otlp_sink: OtlpSink) -> Iterator[LiveStack]:
    """A fresh stack whose every process exports spans to `otlp_sink` (quickly: 200 ms batches)."""
    run_dir = Path(tempfile.mkdtemp(prefix="lt-security-"))
    env = {
        **os.environ,
        "LT_OTLP_ENDPOINT": otlp_sink.url,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    result = subprocess.run(
        [sys.executable, str(STACK_SCRIPT), "up", "--run-dir", str(run_dir), "--ports", "auto"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if result.returncode != 0:
        logs = "\n".join(
            f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted((run_dir / "logs").glob("*.log"))
        )
        subprocess.run([sys.executable, str(STACK_SCRIPT), "down", "--run-dir", str(run_dir)], check=False)
        pytest.fail(f"stack did not start:\n{result.stdout}\n{result.stderr}\n{logs}")
    stack_env = _read_env(run_dir / "stack.env")
    state = json.loads((run_dir / "stack.json").read_text())
    try:
        yield LiveStack(stack_env["LT_GATEWAY_URL"], stack_env["LT_ADMIN_KEY"], run_dir, state)
    finally:
        subprocess.run(
            [sys.executable, str(STACK_SCRIPT), "down", "--run-dir", str(run_dir)],
            check=False,
            capture_output=True,
        )
        left = {name: pid for name, pid in state["pids"].items() if pid_alive(int(pid))}
        assert not left, f"`stack.py down` left processes running: {left}"
