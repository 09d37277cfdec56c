"""Finding 9 (and the file modes of finding 10): no well-known secret in what we ship, and every file
holding a secret readable by its owner only.

Red on the old code: the compose file carried `dev-internal-token-change-me`, `lt-dev-admin-key-change-me`,
Postgres password `postgres` and Grafana admin/admin as defaults, Prometheus' lifecycle API was on, and
`stack.py` left `.run/stack.env` (the admin key) and the gateway's usage spool world-readable.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# Values that appear in public code and so protect nothing.
WELL_KNOWN = re.compile(
    r"change-?me|dev-internal-token|lt-dev-admin-key|sk_test_leaky|PASSWORD:\s*\$\{[A-Z_]+:-[^}]+\}"
    r"|admin/admin|:-postgres\}|--web\.enable-lifecycle|--web\.enable-admin-api",
    re.I,
)
# `NAME: value` / `NAME=value` where NAME looks like a secret and value is a literal (not a file, not empty).
LITERAL = re.compile(
    r"^\s*-?\s*([A-Z0-9_]*(PASSWORD|SECRET|TOKEN|API_KEY|ADMIN_KEY)[A-Z0-9_]*)\s*[:=]\s*(?!\$\{[A-Z_]+:-\})"
    r"(?!/run/secrets/)(\S+)",
    re.M,
)


def deploy_files() -> list[Path]:
    """The compose, Prometheus and Grafana files (the local stack's Python code generates its secrets)."""
    return [
        p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix in {".yml", ".yaml", ".env", ".sh", ".sql"}
    ]


def findings(path: Path) -> list[str]:
    text = path.read_text()
    out = [f"{path.name}: {m.group(0)!r}" for m in WELL_KNOWN.finditer(text)]
    out += [
        f"{path.name}: {m.group(1)} is a literal"
        for m in LITERAL.finditer(text)
        if not m.group(1).endswith(("_FILE", "_DIR"))
    ]
    return out


def test_no_well_known_or_literal_secret_in_the_deploy_files() -> None:
    files = deploy_files()
    assert any(p.name == "docker-compose.yml" for p in files)
    assert [f for p in files for f in findings(p)] == []


def test_the_check_catches_what_the_old_compose_file_shipped(tmp_path: Path) -> None:
    old = tmp_path / "docker-compose.yml"
    old.write_text(
        "  LT_INTERNAL_TOKEN: ${LT_INTERNAL_TOKEN:-dev-internal-token-change-me}\n"
        "  POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:-postgres}\n"
        "  GF_SECURITY_ADMIN_PASSWORD: hunter2\n"
        "      - --web.enable-lifecycle\n"
    )
    assert len(findings(old)) >= 4


@pytest.mark.e2e
@pytest.mark.timeout(300)  # may start the whole stack
async def test_the_local_stacks_secret_files_are_owner_only(traced_stack: Any) -> None:
    run_dir: Path = traced_stack.run_dir
    # One governed request, so the gateway's spool has been written to.
    async with httpx.AsyncClient(base_url=traced_stack.gateway_url, timeout=30) as client:
        reply = await client.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {traced_stack.admin_key}"},
            json={"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        )
    assert reply.status_code == 200
    secret_files = [
        run_dir / name for name in ("stack.env", "admin_key", "internal_signing_key", "metrics_token")
    ]
    secret_files += sorted(run_dir.glob("*spool*"))
    assert any("spool" in p.name for p in secret_files)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in secret_files}
    assert modes == {p.name: "0o600" for p in secret_files}
