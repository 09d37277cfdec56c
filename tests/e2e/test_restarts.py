"""`make up` ten times in a row on one data directory: every start passes, and its start-up check is no one's
request (issue 16: the old check, a `ping` completion with the admin key, was a loop on the fourth start).

Each start: `stack.py up --ports auto` on the same run directory (PostgreSQL data, admin key and internal
token survive `down`), then one request from a marker user, different each time, which the analytics worker
must record before anything is judged: only then would a start-up request have been recorded too. The
bootstrap admin sends nothing here, so its usage must stay zero and no anomaly may appear. Half way, the admin's
key is frozen before `down` (as the loop detector did): the next `up` still starts, names the freeze and prints
the operator's command that lifts it (the admin's frozen key may not), and that command works.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from leaky_devinfra.infra import pid_alive
from leaky_devinfra.testing import eventually

# Ten whole-stack starts: 20-70 s each on a busy 2-core machine (6-9.5 min in all), less when idle.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "local" / "stack.py"
STARTS = 10
FREEZE_BEFORE_START = 5  # the admin's key is frozen before this start (0-based)


def stack(command: str, run_dir: Path) -> subprocess.CompletedProcess[str]:
    extra = ["--ports", "auto"] if command == "up" else []
    return subprocess.run(
        [sys.executable, str(SCRIPT), command, "--run-dir", str(run_dir), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def logs(run_dir: Path) -> str:
    return "\n".join(
        f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted((run_dir / "logs").glob("*.log"))
    )


def stack_env(run_dir: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (run_dir / "stack.env").read_text().splitlines() if line)
    return {k: v for k, v in pairs}


async def admin_figures(admin: httpx.AsyncClient) -> dict[str, Any]:
    quota = (await admin.get("/v1/users/me/quota")).json()
    usage = (await admin.get("/v1/analytics/usage", params={"days": 30})).json()
    anomalies = (await admin.get("/v1/analytics/anomalies")).json()["data"]
    return {
        "used": quota["used_tokens"],
        "reserved": quota["reserved_tokens"],
        "requests": usage["total_requests"],
        "tokens": usage["total_tokens"],
        "anomalies": [(a["kind"], a["target_type"], a["target_id"]) for a in anomalies],
    }


async def marker_recorded(admin: httpx.AsyncClient, marker: dict[str, str], start: int) -> None:
    """One request from the marker user, then wait until analytics has recorded it (the worker is consuming)."""
    async with httpx.AsyncClient(
        base_url=str(admin.base_url), headers={"Authorization": f"Bearer {marker['api_key']}"}, timeout=30
    ) as http:
        body = {
            "model": "mock-gpt",
            "messages": [{"role": "user", "content": f"start {start}"}],
            "max_tokens": 4,
        }
        r = await http.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text

    async def seen() -> bool:
        u = await admin.get("/v1/analytics/usage", params={"days": 30, "user_id": marker["id"]})
        return bool(u.status_code == 200 and u.json()["total_requests"] == start + 1)

    await eventually(seen, timeout=90, what=f"the marker request of start {start} in analytics")


async def freeze_own_key(admin: httpx.AsyncClient) -> str:
    key_id = str((await admin.get("/v1/users/me/keys")).json()["data"][0]["id"])
    body = {"target_type": "key", "target_id": key_id, "reason": "Loop detected (test)", "duration_s": 3600}
    r = await admin.post("/v1/admin/freezes", json=body)
    assert r.status_code == 201, r.text
    return key_id


async def test_ten_starts_on_one_data_directory(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    marker: dict[str, str] = {}
    frozen_key = ""
    seconds: list[float] = []
    try:
        for start in range(STARTS):
            began = time.monotonic()
            up = stack("up", run_dir)
            seconds.append(time.monotonic() - began)
            assert up.returncode == 0, f"start {start} failed:\n{up.stdout}\n{up.stderr}\n{logs(run_dir)}"
            env = stack_env(run_dir)
            async with httpx.AsyncClient(
                base_url=env["LT_GATEWAY_URL"],
                headers={"Authorization": f"Bearer {env['LT_ADMIN_KEY']}"},
                timeout=30,
            ) as admin:
                if start == FREEZE_BEFORE_START:
                    await lift_as_told(up.stdout, frozen_key, admin)
                if not marker:
                    r = await admin.post(
                        "/v1/admin/users",
                        json={"email": f"marker-{uuid.uuid4().hex[:8]}@example.com", "name": "Marker"},
                    )
                    assert r.status_code == 201, r.text
                    marker = {"id": r.json()["id"], "api_key": r.json()["api_key"]}
                await marker_recorded(admin, marker, start)
                figures = await admin_figures(admin)
                assert figures == {"used": 0, "reserved": 0, "requests": 0, "tokens": 0, "anomalies": []}, (
                    start
                )
                if start == FREEZE_BEFORE_START - 1:
                    frozen_key = await freeze_own_key(admin)
            down = stack("down", run_dir)
            assert down.returncode == 0, down.stdout
    finally:
        if (run_dir / "stack.json").exists():
            pids = json.loads((run_dir / "stack.json").read_text())["pids"]
            stack("down", run_dir)
            left = {name: pid for name, pid in pids.items() if pid_alive(int(pid))}
            assert not left, f"`stack.py down` left processes running: {left}"
    print(f"\n{STARTS} starts: " + ", ".join(f"{s:.1f}" for s in seconds) + " s")


async def lift_as_told(stdout: str, key_id: str, admin: httpx.AsyncClient) -> None:
    """`up` named the frozen key and printed the operator's break-glass command; the admin's own frozen key may
    not lift it (a frozen key changes nothing), the command does."""
    assert f"the bootstrap admin's key {key_id} is frozen" in stdout, stdout
    refused = await admin.delete(f"/v1/admin/freezes/key/{key_id}")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "key_frozen", refused.text
    [command] = set(re.findall(r"^\s+(\S+ \S+/deploy/local/stack.py unfreeze-admin .*)$", stdout, flags=re.M))
    lifted = await asyncio.to_thread(
        subprocess.run,
        shlex.split(command),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert lifted.returncode == 0, lifted.stdout + lifted.stderr
    assert f"lifted the freeze on the bootstrap admin's key {key_id}" in lifted.stdout, lifted.stdout
    assert (await admin.get("/v1/admin/freezes")).json()["data"] == []
