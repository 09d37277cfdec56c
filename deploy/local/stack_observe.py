"""A Prometheus for the local stack: `make observe` (python deploy/local/stack.py observe).

    python deploy/local/stack.py observe [--run-dir .run] [--scrape-interval 15s]

Starts the `prometheus` binary found on PATH (`apt-get install prometheus` on Debian or Ubuntu, `brew install
prometheus` on macOS) on 127.0.0.1:9090, or a free port when 9090 is taken (LT_PROMETHEUS_PORT chooses one),
scraping every process of the running stack with the scraper's bearer token (`<run-dir>/metrics_token`) and
the rules of deploy/prometheus/rules.yml, the compose Prometheus' own. Job and `app` labels are the compose
file's, so the rules and the dashboards read the same series. Its configuration, data and log are under
`<run-dir>/prometheus/` and `<run-dir>/logs/prometheus.log`; its PID joins `stack.json`, so `make down` stops
it, and `LT_PROMETHEUS_URL=...` is added to `<run-dir>/stack.env`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from leaky_devinfra.infra import free_port, pid_alive, stop_pid

__all__ = ["APPS", "RULES", "observe", "prometheus_config"]

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
# stack.json's process names -> the compose file's service names (the `app` label of its scrape config).
APPS = {
    "gateway": "gateway",
    "quota": "quota",
    "analytics": "analytics",
    "analytics-worker": "analytics-worker",
    "saga": "purchase-saga",
    "notifier": "notifier",
}
DEFAULT_PORT = 9090


def prometheus_config(ports: dict[str, int], token_file: Path, scrape_interval: str) -> dict[str, object]:
    """The compose Prometheus' configuration with the local stack's ports."""
    return {
        "global": {
            "scrape_interval": scrape_interval,
            "evaluation_interval": scrape_interval,
            "external_labels": {"stack": "leaky-tokens-local"},
        },
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "leaky-tokens",
                "metrics_path": "/metrics",
                "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
                "static_configs": [
                    {"targets": [f"127.0.0.1:{ports[name]}"], "labels": {"app": app}}
                    for name, app in APPS.items()
                ],
            },
        ],
    }


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:  # noqa: S310 - local URL we built
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _set_env_line(env_file: Path, key: str, value: str) -> None:
    lines = [line for line in env_file.read_text().splitlines() if not line.startswith(f"{key}=")]
    text = "\n".join([*lines, f"{key}={value}"]) + "\n"
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def observe(run_dir: Path, scrape_interval: str = "15s", timeout: float = 30.0) -> str:
    """Start (or find running) the stack's Prometheus; returns its URL. Raises RuntimeError when it cannot."""
    state_path = run_dir / "stack.json"
    if not state_path.exists() or not (run_dir / "stack.env").exists():
        raise RuntimeError(f"no stack is running in {run_dir}: `make up` first")
    state = json.loads(state_path.read_text())
    pids: dict[str, int] = state["pids"]
    if "prometheus" in pids and pid_alive(int(pids["prometheus"])) and state.get("prometheus_url"):
        return str(state["prometheus_url"])
    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeError(
            "no `prometheus` on PATH: `apt-get install prometheus` (Debian, Ubuntu) or `brew install prometheus`"
        )
    home = run_dir / "prometheus"
    home.mkdir(exist_ok=True)
    config = home / "prometheus.yml"
    token_file = run_dir / "metrics_token"
    config.write_text(yaml.safe_dump(prometheus_config(state["ports"], token_file, scrape_interval)))
    wanted = os.environ.get("LT_PROMETHEUS_PORT")
    port = int(wanted) if wanted else (DEFAULT_PORT if _port_free(DEFAULT_PORT) else free_port())
    url = f"http://127.0.0.1:{port}"
    (run_dir / "logs").mkdir(exist_ok=True)
    with (run_dir / "logs" / "prometheus.log").open("ab") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={home / 'data'}",
                "--storage.tsdb.retention.time=2d",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=home,
            start_new_session=True,
        )
    pids["prometheus"] = proc.pid
    state["prometheus_url"] = url
    state_path.write_text(json.dumps(state, indent=2))
    deadline = time.monotonic() + timeout
    while not _ready(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_pid(proc.pid, popen=proc)
            raise RuntimeError(
                f"prometheus did not become ready at {url}; see {run_dir / 'logs' / 'prometheus.log'}"
            )
        time.sleep(0.1)
    _set_env_line(run_dir / "stack.env", "LT_PROMETHEUS_URL", url)
    return url
