"""Run each app process as the Kubernetes manifests do — user 10001, read-only root filesystem, writable only
`/tmp` and `/var/lib/leaky-tokens` — and check that it starts and answers its probes.

    python deploy/k8s/check_readonly.py [--run-dir .run/readonly-check]

Needs `bwrap` (Debian: `apt-get install bubblewrap`). Starts a local stack (deploy/local/stack.py, free ports),
then a second instance of every process inside bubblewrap (a user namespace: the same network, the root
filesystem bound read-only, fresh tmpfs on the two writable paths, uid and gid 10001, HOME unwritable,
PYTHONDONTWRITEBYTECODE=1 as in the image), with the environment the stack gave the first one and the
manifests' paths (spool, journal, faust data dir). Each must pass the probes of its Deployment (readiness
on /ready, /health for the analytics worker and the console) within the deadline. Stops everything it
started, by PID.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

from leaky_devinfra.infra import free_port, stop_pid

ROOT = Path(__file__).resolve().parents[2]
STATE = "/var/lib/leaky-tokens"
# name -> (probe path, the manifests' extra settings)
PROCESSES = {
    "quota": ("/ready", {}),
    "analytics": ("/ready", {}),
    "analytics-worker": ("/health", {"LT_FAUST_DATADIR": f"{STATE}/faust"}),
    "saga": ("/ready", {}),
    "notifier": ("/ready", {}),
    "console": ("/health", {}),
    "gateway": (
        "/ready",
        {
            "LT_USAGE_SPOOL_PATH": f"{STATE}/spool/usage-spool.sqlite",
            "LT_USAGE_JOURNAL_DIR": f"{STATE}/spool/journal",
        },
    ),
}


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - a local URL we built
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", type=Path, default=ROOT / ".run" / "readonly-check")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        sys.stderr.write("bwrap not found: apt-get install bubblewrap\n")
        return 2
    # bwrap mounts the tmpfs on an existing directory: made empty here if missing, removed again at the end.
    made_state = not Path(STATE).exists()
    Path(STATE).mkdir(parents=True, exist_ok=True)
    stack = [sys.executable, str(ROOT / "deploy/local/stack.py")]
    subprocess.run([*stack, "up", "--run-dir", str(args.run_dir), "--ports", "auto"], check=True)
    pids = {k: int(v) for k, v in json.loads((args.run_dir / "stack.json").read_text())["pids"].items()}
    started: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    failed = []
    try:
        for name, (probe, extra) in PROCESSES.items():
            original = psutil.Process(pids[name])
            port = free_port()
            env = {
                **original.environ(),
                **extra,
                "LT_PORT": str(port),
                "LT_WORKER_METRICS_PORT": str(port),
                "HOME": "/home/app",
                "PYTHONDONTWRITEBYTECODE": "1",
            }
            command = [
                bwrap,
                "--ro-bind", "/", "/",
                "--dev", "/dev",
                "--proc", "/proc",
                "--tmpfs", "/tmp",  # noqa: S108 - a fresh tmpfs of the sandbox, as the pod's emptyDir
                "--tmpfs", STATE,
                "--unshare-user", "--uid", "10001", "--gid", "10001",
                "--chdir", STATE,
                "--die-with-parent",
                *original.cmdline(),
            ]  # fmt: skip
            log = (args.run_dir / "logs" / f"readonly-{name}.log").open("wb")
            proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            started[name] = (proc, f"http://127.0.0.1:{port}{probe}")
        deadline = time.monotonic() + args.timeout
        pending = dict(started)
        while pending and time.monotonic() < deadline:
            for name, (proc, url) in list(pending.items()):
                if proc.poll() is not None:
                    failed.append(f"{name}: exited with {proc.returncode}")
                    del pending[name]
                elif _status(url) == 200:
                    print(f"{name}: {url} 200 as uid 10001 on a read-only root")
                    del pending[name]
            time.sleep(0.2)
        failed += [f"{name}: no 200 from {url} in {args.timeout:.0f}s" for name, (_, url) in pending.items()]
        if "gateway" not in pending:
            # One governed completion through the sandboxed gateway: tokenizing, the usage queue and journal.
            env_file = dict(line.split("=", 1) for line in (args.run_dir / "stack.env").read_text().split())
            gateway = started["gateway"][1].removesuffix("/ready")
            request = urllib.request.Request(  # noqa: S310 - a local URL we built
                f"{gateway}/v1/chat/completions",
                data=json.dumps(
                    {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}
                ).encode(),
                headers={
                    "Authorization": f"Bearer {env_file['LT_ADMIN_KEY']}",
                    "Content-Type": "application/json",
                },
            )
            with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 - a local URL we built
                print(f"gateway: a chat completion through it answered {resp.status}")
                if resp.status != 200:
                    failed.append(f"gateway: completion answered {resp.status}")
        time.sleep(2)
        failed += [
            f"{n}: exited with {p.returncode} after start"
            for n, (p, _) in started.items()
            if p.poll() is not None
        ]
    finally:
        for proc, _ in started.values():
            stop_pid(proc.pid)
        subprocess.run([*stack, "down", "--run-dir", str(args.run_dir)], check=False)
        if made_state:
            Path(STATE).rmdir()
    for line in failed:
        print(f"FAILED {line} (log: {args.run_dir}/logs/readonly-<name>.log)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
