"""Screenshots of every web console page at desktop (1280 px) and phone (375 px) widths, into docs/console/.

    make up && python scripts/console_screenshots.py [--run-dir .run] [--out docs/console]

Against a running stack (LT_GATEWAY_URL and LT_ADMIN_KEY from the environment, else `<run-dir>/stack.env`),
it makes a little demo data through the public API (a team with a manager and a member, some usage, a
purchase, a pending approval, a freeze) and photographs each page in Debian's Chromium
(`apt-get install chromium`; Playwright's own browsers are not used).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
WIDTHS = {"desktop": (1280, 800), "phone": (375, 740)}
PASSWORD = "console demo password"
USER_PAGES = ["overview", "keys", "sessions", "purchases", "approvals", "team"]
ADMIN_PAGES = ["users", "teams", "pools", "org", "anomalies", "thresholds", "channels"]


def _stack(run_dir: Path) -> tuple[str, str]:
    url, key = os.environ.get("LT_GATEWAY_URL"), os.environ.get("LT_ADMIN_KEY")
    if url and key:
        return url.rstrip("/"), key
    env = dict(line.split("=", 1) for line in (run_dir / "stack.env").read_text().split())
    return env["LT_GATEWAY_URL"].rstrip("/"), env["LT_ADMIN_KEY"]


def _ok(resp: httpx.Response) -> Any:
    if resp.status_code >= 400:
        raise SystemExit(f"{resp.request.method} {resp.request.url.path}: {resp.status_code} {resp.text}")
    return resp.json() if resp.content else None


def demo_data(url: str, admin_key: str) -> dict[str, Any]:
    """A team with a manager and a member, usage on two models, a purchase, a pending request, a freeze."""
    suffix = uuid.uuid4().hex[:6]
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=30) as admin:
        team = _ok(admin.post("/v1/admin/teams", json={"name": f"Research {suffix}", "pool": 2_000_000}))
        people: dict[str, Any] = {}
        for role, name in (("manager", "Grace Manager"), ("member", "Alan Member")):
            body = {
                "email": f"{role}-{suffix}@example.com",
                "name": name,
                "personal_quota": 250_000,
                "team_id": team["id"],
            }
            user = _ok(admin.post("/v1/admin/users", json=body))
            _ok(admin.post(f"/v1/admin/teams/{team['id']}/members/{user['id']}", json={"role": role}))
            people[role] = user
        with httpx.Client(base_url=url, timeout=30) as client:
            for user in people.values():
                auth = {"Authorization": f"Bearer {user['api_key']}"}
                _ok(client.put("/v1/users/me/password", json={"password": PASSWORD}, headers=auth))
            manager = {"Authorization": f"Bearer {people['manager']['api_key']}"}
            for i in range(6):
                chat = {
                    "model": "mock-gpt",
                    "messages": [{"role": "user", "content": f"hello {i} " * 40}],
                    "max_tokens": 64,
                }
                _ok(client.post("/v1/chat/completions", json=chat, headers=manager))
                _ok(
                    client.post(
                        "/v1/embeddings",
                        json={"model": "mock-embedding", "input": "text " * 200},
                        headers=manager,
                    )
                )
            _ok(client.post("/v1/users/me/keys", json={"name": "laptop"}, headers=manager))
            purchase = _ok(
                client.post(
                    "/v1/purchases",
                    json={"tokens": 20_000},
                    headers={**manager, "idempotency-key": str(uuid.uuid4())},
                )
            )
            member = {"Authorization": f"Bearer {people['member']['api_key']}"}
            _ok(
                client.post(
                    "/v1/approvals",
                    json={"requested_credits": 50_000, "reason": "Quarterly eval run"},
                    headers=member,
                )
            )
            deadline = time.monotonic() + 60
            while (
                _ok(client.get("/v1/analytics/usage", params={"days": 1}, headers=manager))["total_requests"]
                < 12
            ):
                if time.monotonic() > deadline:
                    print("usage not counted yet: the spend chart may be empty", file=sys.stderr)
                    break
                time.sleep(0.5)
        _ok(
            admin.post(
                "/v1/admin/freezes",
                json={
                    "target_type": "user",
                    "target_id": people["member"]["id"],
                    "reason": "demo: runaway loop suspected",
                    "duration_s": 3600,
                },
            )
        )
        # Offline, a test send to it fails with the notifier's reason: the page shows that.
        channel = {
            "channel": "webhook",
            "url": "https://hooks.example.com/leaky-tokens",
            "name": "ops webhook",
        }
        _ok(admin.post("/v1/admin/notifications/channels", json=channel))
    return {"team": team, "purchase": purchase, **people}


def sign_in(page: Page, url: str, *, email: str = "", api_key: str = "") -> None:
    page.goto(f"{url}/console/login")
    if api_key:
        page.get_by_label("API key").fill(api_key)
    else:
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview", exact=True)).to_be_visible()


def shoot(browser: Browser, url: str, out: Path, data: dict[str, Any], admin_key: str) -> list[Path]:
    """Every page at every width; returns the files written."""
    written = []
    for width_name, (width, height) in WIDTHS.items():
        context = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=1)
        page = context.new_page()
        page.goto(f"{url}/console/login")
        written.append(_snap(page, out / f"login-{width_name}.png"))
        sign_in(page, url, email=data["manager"]["email"])
        for name in USER_PAGES:
            page.goto(f"{url}/console/{name}")
            written.append(_snap(page, out / f"{name}-{width_name}.png"))
        page.goto(f"{url}/console/purchases/{data['purchase']['id']}")
        expect(page.get_by_test_id("purchase-status")).to_have_text("COMPLETED", timeout=30_000)
        written.append(_snap(page, out / f"purchase-{width_name}.png"))
        context.close()
        context = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=1)
        page = context.new_page()
        sign_in(page, url, api_key=admin_key)
        for name in ADMIN_PAGES:
            page.goto(f"{url}/console/admin/{name}")
            if name == "channels":
                page.get_by_role("button", name="Send a test").first.click()
                expect(page.locator(".flash")).to_be_visible()
            written.append(_snap(page, out / f"admin-{name}-{width_name}.png"))
        context.close()
    return written


def _snap(page: Page, path: Path) -> Path:
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(path), full_page=True)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run-dir", type=Path, default=ROOT / ".run")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "console")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    if not Path(args.chromium).exists():
        print(f"{args.chromium} not found: `apt-get install chromium`", file=sys.stderr)
        return 1
    url, admin_key = _stack(args.run_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    data = demo_data(url, admin_key)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        try:
            written = shoot(browser, url, args.out, data, admin_key)
        finally:
            browser.close()
    for path in written:
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
