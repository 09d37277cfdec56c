"""Purchase latency on the local stack: request to COMPLETED, through the gateway, one purchase at a time.

    python bench/saga_latency.py [--purchases 100] [--gateway URL --admin-key KEY]

Uses the running stack when `--gateway`/`--admin-key` (or `LT_GATEWAY_URL`/`LT_ADMIN_KEY`) are given, else
starts its own on free ports and stops it afterwards. For each purchase it POSTs `/v1/purchases` with the
succeeding test card and polls `GET /v1/purchases/{id}` every 5 ms until it is terminal. Prints p50/p90/p99
of the client-observed time (POST sent -> COMPLETED seen) and of the server-side time (created_at ->
updated_at of the terminal row), and the time spent in each step from the step log.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_stack() -> tuple[str, str, Path]:
    run_dir = Path(tempfile.mkdtemp(prefix="lt-saga-latency-"))
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "deploy/local/stack.py"),
            "up",
            "--run-dir",
            str(run_dir),
            "--ports",
            "auto",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    env = dict(line.split("=", 1) for line in (run_dir / "stack.env").read_text().split())
    return env["LT_GATEWAY_URL"], env["LT_ADMIN_KEY"], run_dir


async def create_user(session: aiohttp.ClientSession, gateway: str, admin_key: str) -> str:
    async with session.post(
        f"{gateway}/v1/admin/users",
        headers={"Authorization": f"Bearer {admin_key}"},
        json={"email": f"latency-{uuid.uuid4().hex[:8]}@example.com", "name": "latency"},
    ) as resp:
        assert resp.status == 201, await resp.text()
        return str((await resp.json())["api_key"])


async def one_purchase(
    session: aiohttp.ClientSession, gateway: str, key: str
) -> tuple[float, float, dict[str, float]]:
    """Client seconds, server seconds and seconds per step (step start -> its success) of one purchase."""
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": uuid.uuid4().hex}
    started = time.perf_counter()
    async with session.post(f"{gateway}/v1/purchases", json={"tokens": 1000}, headers=headers) as resp:
        assert resp.status == 202, await resp.text()
        purchase_id = (await resp.json())["id"]
    while True:
        async with session.get(f"{gateway}/v1/purchases/{purchase_id}", headers=headers) as resp:
            body = await resp.json()
        if body["status"] in ("COMPLETED", "COMPENSATED", "FAILED"):
            break
        await asyncio.sleep(0.005)
    client_s = time.perf_counter() - started
    assert body["status"] == "COMPLETED", body
    server_s = (
        datetime.fromisoformat(body["updated_at"]) - datetime.fromisoformat(body["created_at"])
    ).total_seconds()
    began: dict[str, datetime] = {}
    steps: dict[str, float] = {}
    for step in body["steps"]:
        at = datetime.fromisoformat(step["at"])
        if step["status"] == "started":
            began[step["step"]] = at
        elif step["status"] == "succeeded" and step["step"] in began:
            steps[step["step"]] = (at - began[step["step"]]).total_seconds()
    return client_s, server_s, steps


async def measure(gateway: str, admin_key: str, purchases: int) -> None:
    async with aiohttp.ClientSession() as session:
        key = await create_user(session, gateway, admin_key)
        for _ in range(5):  # warm-up: connections, consumer fetch loops, statement caches
            await one_purchase(session, gateway, key)
        client, server = [], []
        per_step: dict[str, list[float]] = defaultdict(list)
        for _ in range(purchases):
            c, s, steps = await one_purchase(session, gateway, key)
            client.append(c)
            server.append(s)
            for name, seconds in steps.items():
                per_step[name].append(seconds)
    print(f"purchases: {purchases}, sequential, card pm_card_visa, through the gateway")
    for name, values in (
        ("client: POST -> COMPLETED seen", client),
        ("server: created -> completed", server),
    ):
        print(
            f"{name:32} p50 {percentile(values, 0.5) * 1000:7.1f} ms  p90 {percentile(values, 0.9) * 1000:7.1f} ms"
            f"  p99 {percentile(values, 0.99) * 1000:7.1f} ms"
        )
    for name, values in per_step.items():
        print(f"  step {name:26} p50 {percentile(values, 0.5) * 1000:7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--purchases", type=int, default=100)
    parser.add_argument("--gateway", default=os.environ.get("LT_GATEWAY_URL"))
    parser.add_argument("--admin-key", default=os.environ.get("LT_ADMIN_KEY"))
    args = parser.parse_args()
    if args.gateway and args.admin_key:
        asyncio.run(measure(args.gateway, args.admin_key, args.purchases))
        return
    gateway, admin_key, run_dir = start_stack()
    try:
        asyncio.run(measure(gateway, admin_key, args.purchases))
    finally:
        subprocess.run(
            [sys.executable, str(ROOT / "deploy/local/stack.py"), "down", "--run-dir", str(run_dir)],
            check=False,
        )


if __name__ == "__main__":
    main()
