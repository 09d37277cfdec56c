"""No cap can be overrun by what the estimate leaves out: a stack of its own whose routing file points at fake
providers that bill the usage they reckon from the request body (tools, images by their own rule, every
choice), never the gateway's estimate. For tools, images, n, best_of and a dearer fallback, each of a usd
pool, a key's usd cap and a session budget is spent until the gateway refuses: spend stays within the cap."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import subprocess
import sys
import tempfile
import uuid
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from leaky_devinfra.fakes.llm import FakeKind, FakeProvider
from leaky_devinfra.fakes.llm_usage import Reckoner
from leaky_devinfra.infra import pid_alive
from leaky_devinfra.testing import eventually
from lt_gateway.domain.tokens import text_tokens

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
KEY_ENV = "LT_E2E_CAPS_PROVIDER_KEY"
REMOTE = "https://images.example/photo.png"
CAP_USD_MICROS = 20_000


def png_url(w: int, h: int) -> str:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + chunk).decode()


def tool(name: str) -> dict[str, Any]:
    props = {f"{name}_{i}": {"type": "string", "description": f"value {i} of the {name}"} for i in range(15)}
    schema = {"type": "object", "properties": props}
    return {
        "type": "function",
        "function": {"name": name, "description": f"Find {name}s.", "parameters": schema},
    }


IMAGES = [
    {"type": "text", "text": "what is in these?"},
    {"type": "image_url", "image_url": {"url": png_url(1600, 1200)}},
    {"type": "image_url", "image_url": {"url": REMOTE}},
]
HELLO = [{"role": "user", "content": "hello"}]
# (endpoint, body) per case; every one is billed more than a text-only, one-choice estimate at the requested
# model's prices would reserve. max_tokens keeps the grant small, so a short estimate cannot hide in it.
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "tools": (
        "chat",
        {
            "model": "true-gpt",
            "messages": HELLO,
            "tools": [tool("order"), tool("customer")],
            "max_tokens": 12,
        },
    ),
    "images": (
        "chat",
        {"model": "true-gpt", "messages": [{"role": "user", "content": IMAGES}], "max_tokens": 12},
    ),
    "claude-images": (
        "chat",
        {"model": "true-claude", "messages": [{"role": "user", "content": IMAGES}], "max_tokens": 12},
    ),
    "n": ("chat", {"model": "true-gpt", "messages": HELLO, "n": 8, "max_tokens": 12}),
    "best_of": (
        "completions",
        {"model": "true-gpt", "prompt": ["a", "b"], "n": 2, "best_of": 5, "max_tokens": 12},
    ),
    "fallback": ("chat", {"model": "cheap", "messages": HELLO, "tools": [tool("order")], "max_tokens": 12}),
}


@dataclass
class CapStack:
    gateway_url: str
    admin_key: str


def route(name: str, kind: str, fake: FakeProvider, inp: int, out: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "provider": kind, "upstream_model": f"up-{name}", "base_url": fake.base_url,
            "api_key_env": KEY_ENV, "input_usd_micros_per_mtok": inp, "output_usd_micros_per_mtok": out,
            **extra}  # fmt: skip


@pytest.fixture(scope="module")
async def cstack() -> AsyncIterator[CapStack]:
    reckoner = Reckoner(count=text_tokens, remote_images={REMOTE: (2048, 768)})
    words = tuple(f" w{i}" for i in range(12))
    kinds: dict[str, FakeKind] = {"gpt": "openai", "claude": "anthropic", "down": "openai"}
    fakes = {
        name: FakeProvider(kind, api_key="sk-fake", words=words, reckoner=reckoner)
        for name, kind in kinds.items()
    }
    fakes["down"].fail_next = [503] * 10_000
    for fake in fakes.values():
        await fake.start()
    routes = [
        route("true-gpt", "openai", fakes["gpt"], 2_500_000, 10_000_000),
        route("true-claude", "anthropic", fakes["claude"], 3_000_000, 15_000_000),
        route("cheap", "openai", fakes["down"], 50_000, 200_000, max_retries=0, fallbacks=["true-claude"]),
    ]
    run_dir = Path(tempfile.mkdtemp(prefix="lt-e2e-caps-"))
    (run_dir / "models.json").write_text(json.dumps(routes))
    env = {**os.environ, "LT_MODELS_FILE": str(run_dir / "models.json"), KEY_ENV: "sk-fake"}
    script = ROOT / "deploy" / "local" / "stack.py"
    # In a thread, so this loop keeps serving the fake providers meanwhile.
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(script), "up", "--run-dir", str(run_dir), "--ports", "auto"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    try:
        if result.returncode != 0:
            pytest.fail(f"stack did not start:\n{result.stdout}\n{result.stderr}")
        lines = (run_dir / "stack.env").read_text().splitlines()
        stack_env = dict(line.split("=", 1) for line in lines if line)
        yield CapStack(stack_env["LT_GATEWAY_URL"], stack_env["LT_ADMIN_KEY"])
    finally:
        state = run_dir / "stack.json"
        pids = json.loads(state.read_text())["pids"] if state.exists() else {}
        await asyncio.to_thread(
            subprocess.run, [sys.executable, str(script), "down", "--run-dir", str(run_dir)],
            check=False, capture_output=True,
        )  # fmt: skip
        for fake in fakes.values():
            await fake.close()
        left = {name: pid for name, pid in pids.items() if pid_alive(int(pid))}
        assert not left, f"`stack.py down` left processes running: {left}"


async def capped(http: httpx.AsyncClient, admin: dict[str, str], cap: str) -> tuple[str, dict[str, str], str]:
    """A new user's key and request headers under one usd cap of CAP_USD_MICROS, and where to read it."""
    email = f"caps-{uuid.uuid4().hex[:8]}@example.com"
    r = await http.post(
        "/v1/admin/users", headers=admin, json={"email": email, "name": "C", "personal_quota": 10**9}
    )
    assert r.status_code == 201, r.text
    user = r.json()
    key, headers = user["api_key"], {}
    if cap == "usd_pool":
        body = {"owner_type": "user", "owner_id": user["id"], "unit": "usd", "limit": CAP_USD_MICROS}
        r = await http.post("/v1/admin/pools", headers=admin, json=body)
        assert r.status_code == 201, r.text
        where = r.json()["id"]
    elif cap == "key_cap":
        body = {"name": "capped", "max_usd_micros": CAP_USD_MICROS}
        r = await http.post("/v1/users/me/keys", headers={"Authorization": f"Bearer {key}"}, json=body)
        assert r.status_code == 201, r.text
        key, where = r.json()["api_key"], "key"
    else:
        where = f"caps-{uuid.uuid4().hex[:10]}"
        r = await http.put(
            f"/v1/admin/sessions/{where}/budget", headers=admin, json={"budget_usd_micros": CAP_USD_MICROS}
        )
        assert r.status_code == 200, r.text
        headers = {"X-Session-ID": where}
    return key, {"Authorization": f"Bearer {key}", **headers}, where


async def spent(http: httpx.AsyncClient, admin: dict[str, str], key: str, cap: str, where: str) -> int | None:
    """The cap's settled spend, once nothing is reserved on it any more."""
    if cap == "session_budget":
        view = (await http.get(f"/v1/admin/sessions/{where}", headers=admin)).json()
        return None if view["reserved_usd_micros"] else int(view["spent_usd_micros"])
    pools = (await http.get("/v1/users/me/quota", headers={"Authorization": f"Bearer {key}"})).json()["pools"]
    pool = next(p for p in pools if p["unit"] == "usd" and (p["id"] == where or p["owner_type"] == where))
    return None if pool["reserved"] else int(pool["used"])


def varied(body: dict[str, Any], i: int) -> dict[str, Any]:
    """`body` with a different prompt each time (the same prompt again and again is a loop, and frozen)."""
    if "messages" in body:
        return {**body, "messages": [*body["messages"], {"role": "user", "content": f"attempt {i}"}]}
    return {**body, "prompt": [f"{p} {i}" for p in body["prompt"]]}


@pytest.mark.parametrize("cap", ["usd_pool", "key_cap", "session_budget"])
@pytest.mark.parametrize("case", list(CASES))
async def test_spend_stays_within_every_cap(cstack: CapStack, case: str, cap: str) -> None:
    endpoint, body = CASES[case]
    admin = {"Authorization": f"Bearer {cstack.admin_key}"}
    async with httpx.AsyncClient(base_url=cstack.gateway_url, timeout=30) as http:
        key, headers, where = await capped(http, admin, cap)
        statuses = []
        for i in range(40):
            r = await http.post(
                f"/v1/{'chat/completions' if endpoint == 'chat' else 'completions'}",
                headers=headers,
                json=varied(body, i),
            )
            statuses.append(r.status_code)
            if r.status_code != 200:
                break
            # Sequential, each settled before the next (release-before-end is another change's).
            await eventually(lambda: spent(http, admin, key, cap, where), 30, "settled")
        assert statuses[0] == 200 and statuses[-1] == 402, statuses
        used = await eventually(lambda: spent(http, admin, key, cap, where), 30, "settled")
        assert 0 < used <= CAP_USD_MICROS, (case, cap, used, statuses)
