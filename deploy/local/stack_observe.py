"""A Prometheus for the local stack: `make observe` (python deploy/local/stack.py observe).

    python deploy/local/stack.py observe [--run-dir .run] [--scrape-interval 15s]

Starts the `prometheus` binary found on PATH (`apt-get install prometheus` on Debian or Ubuntu, `brew install
prometheus` on macOS) on 127.0.0.1:9090, or a free port when 9090 is taken (LT_PROMETHEUS_PORT chooses one),
scraping every process of the running stack with the scraper's bearer token (`<run-dir>/metrics_token`) and
the rules of deploy/prometheus/rules.yml, the compose Prometheus' own. Job and `app` labels are the compose
file's, so the rules and the dashboards read the same series. Its configuration, data and log are under
`<run-dir>/prometheus/` and `<run-dir>/logs/prometheus.log`; its PID joins `stack.json`, so `make down` stops
it, and `LT_PROMETHEUS_URL=...` is added to `<run-dir>/stack.env`.

When Alertmanager is on PATH too (`alertmanager`, or Debian's `prometheus-alertmanager`: `apt-get install
prometheus-alertmanager`, `brew install alertmanager`), it runs beside Prometheus with deploy/alertmanager/alertmanager.yml, its webhook pointed at the
stack's notifier with the token `up` gave the notifier (`<run-dir>/alertmanager_token`), clustering off, and
`LT_ALERTMANAGER_URL=...` is added to `stack.env`: alerts then reach the notifier as in compose.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from leaky_devinfra.infra import free_port, pid_alive, port_bindable, stop_pid

__all__ = [
    "ALERTMANAGER_CONFIG",
    "APPS",
    "RULES",
    "alertmanager_binary",
    "alertmanager_config",
    "observe",
    "prometheus_config",
]

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
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
DEFAULT_ALERTMANAGER_PORT = 9093


def prometheus_config(
    ports: dict[str, int], token_file: Path, scrape_interval: str, alertmanager: str | None = None
) -> dict[str, object]:
    """The compose Prometheus' configuration with the local stack's ports (and Alertmanager's `host:port`)."""
    alerting = {"alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}}
    return {
        **(alerting if alertmanager else {}),
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


def alertmanager_config(notifier_port: int, token_file: Path) -> dict[str, object]:
    """The compose Alertmanager's configuration, its webhook pointed at the local notifier."""
    config: dict[str, object] = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    receivers = config["receivers"]
    assert isinstance(receivers, list)
    for receiver in receivers:
        for hook in receiver.get("webhook_configs", []):
            path = hook["url"].split("/", 3)[3]
            hook["url"] = f"http://127.0.0.1:{notifier_port}/{path}"
            hook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    return config


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


def observe(run_dir: Path, scrape_interval: str = "15s", timeout: float = 30.0) -> dict[str, str]:
    """Start (or find running) the stack's Prometheus (and Alertmanager); returns the lines added to
    stack.env (`LT_PROMETHEUS_URL`, `LT_ALERTMANAGER_URL`). Raises RuntimeError when it cannot."""
    state_path = run_dir / "stack.json"
    if not state_path.exists() or not (run_dir / "stack.env").exists():
        raise RuntimeError(f"no stack is running in {run_dir}: `make up` first")
    state = json.loads(state_path.read_text())
    pids: dict[str, int] = state["pids"]
    if "prometheus" in pids and pid_alive(int(pids["prometheus"])) and state.get("prometheus_url"):
        return _urls(state)
    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeError(
            "no `prometheus` on PATH: `apt-get install prometheus` (Debian, Ubuntu) or `brew install prometheus`"
        )
    home = run_dir / "prometheus"
    home.mkdir(exist_ok=True)
    config = home / "prometheus.yml"
    token_file = run_dir / "metrics_token"
    alertmanager = _start_alertmanager(run_dir, state, timeout)
    config.write_text(
        yaml.safe_dump(
            prometheus_config(
                state["ports"],
                token_file,
                scrape_interval,
                alertmanager.removeprefix("http://") if alertmanager else None,
            )
        )
    )
    _start(
        run_dir,
        state,
        "prometheus",
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={home / 'data'}",
            "--storage.tsdb.retention.time=2d",
        ],
        _choose_port("LT_PROMETHEUS_PORT", DEFAULT_PORT),
        timeout,
    )
    state["alertmanager_url"] = alertmanager
    state_path.write_text(json.dumps(state, indent=2))
    urls = _urls(state)
    for key, value in urls.items():
        _set_env_line(run_dir / "stack.env", key, value)
    return urls


def _urls(state: dict[str, Any]) -> dict[str, str]:
    urls = {"LT_PROMETHEUS_URL": str(state["prometheus_url"])}
    pid = state["pids"].get("alertmanager")
    if state.get("alertmanager_url") and pid is not None and pid_alive(int(pid)):
        urls["LT_ALERTMANAGER_URL"] = str(state["alertmanager_url"])
    return urls


def _choose_port(variable: str, default: int) -> int:
    wanted = os.environ.get(variable)
    return int(wanted) if wanted else (default if port_bindable(default) else free_port())


def _start(
    run_dir: Path, state: dict[str, Any], name: str, command: list[str], port: int, timeout: float
) -> str:
    """Start `command` listening on 127.0.0.1:`port`, record its PID in stack.json, wait for /-/ready."""
    url = f"http://127.0.0.1:{port}"
    (run_dir / "logs").mkdir(exist_ok=True)
    with (run_dir / "logs" / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(
            [*command, f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=run_dir / "prometheus",
            start_new_session=True,
        )
    state["pids"][name] = proc.pid
    state[f"{name}_url"] = url
    (run_dir / "stack.json").write_text(json.dumps(state, indent=2))
    deadline = time.monotonic() + timeout
    while not _ready(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_pid(proc.pid, popen=proc)
            raise RuntimeError(
                f"{name} did not become ready at {url}; see {run_dir / 'logs' / f'{name}.log'}"
            )
        time.sleep(0.1)
    return url


def alertmanager_binary() -> str | None:
    """Alertmanager on PATH: `alertmanager` (upstream, Homebrew) or `prometheus-alertmanager` (Debian's)."""
    return shutil.which("alertmanager") or shutil.which("prometheus-alertmanager")


def _start_alertmanager(run_dir: Path, state: dict[str, Any], timeout: float) -> str | None:
    """Alertmanager routing to the stack's notifier, when the binary is installed; its URL, else None."""
    binary = alertmanager_binary()
    token_file = run_dir / "alertmanager_token"
    if binary is None or not token_file.exists():
        return None
    config = run_dir / "prometheus" / "alertmanager.yml"
    config.write_text(yaml.safe_dump(alertmanager_config(state["ports"]["notifier"], token_file)))
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.path={run_dir / 'prometheus' / 'alertmanager'}",
        "--cluster.listen-address=",  # no gossip port: one instance
    ]
    return _start(
        run_dir,
        state,
        "alertmanager",
        command,
        _choose_port("LT_ALERTMANAGER_PORT", DEFAULT_ALERTMANAGER_PORT),
        timeout,
    )
