"""The web console in Chromium against the live stack (one stack, one browser for the module): sign-in with a
password and with an API key, the overview showing the pools the API returns, a key shown once and revoked, a
purchase watched to COMPLETED, an approval asked by a member and granted by their manager, the admin pages
and a freeze lifted from them, a member refused an admin page with the API's message, and CSRF refusals.

Playwright drives Debian's Chromium (`apt-get install chromium`; `playwright install` is never used): skipped
locally with that hint when /usr/bin/chromium is missing, failed under CI."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from leaky_devinfra.testing import required_tool

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
PASSWORD = "console e2e password"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = required_tool(CHROMIUM, "chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def api(stack: Any) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=stack.gateway_url, headers={"Authorization": f"Bearer {stack.admin_key}"}, timeout=30
    ) as client:
        yield client


@pytest.fixture(scope="module")
def people(stack: Any, api: httpx.Client) -> dict[str, dict[str, Any]]:
    """A team with a manager and a member (personal pool of 100,000 tokens, a password to sign in with)."""
    suffix = uuid.uuid4().hex[:8]
    team = api.post("/v1/admin/teams", json={"name": f"console-{suffix}", "pool": 50_000})
    assert team.status_code == 201, team.text
    out: dict[str, dict[str, Any]] = {}
    for role in ("member", "manager"):
        r = api.post(
            "/v1/admin/users",
            json={
                "email": f"console-{role}-{suffix}@example.com",
                "name": f"Console {role.title()}",
                "personal_quota": 100_000,
                "team_id": team.json()["id"],
            },
        )
        assert r.status_code == 201, r.text
        user = r.json()
        r = api.post(f"/v1/admin/teams/{team.json()['id']}/members/{user['id']}", json={"role": role})
        assert r.status_code == 200, r.text
        r = httpx.put(
            f"{stack.gateway_url}/v1/users/me/password",
            json={"password": PASSWORD},
            headers={"Authorization": f"Bearer {user['api_key']}"},
            timeout=30,
        )
        assert r.status_code == 204, r.text
        out[role] = user
    return out


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def sign_in(page: Any, stack: Any, *, email: str = "", password: str = "", api_key: str = "") -> None:
    from playwright.sync_api import expect

    page.goto(f"{stack.gateway_url}/console/")
    expect(page).to_have_url(re.compile(r"/console/login$"))
    if api_key:
        page.get_by_label("API key").fill(api_key)
    else:
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview", exact=True)).to_be_visible()


def test_password_sign_in_shows_the_pools_the_api_returns_and_sign_out_ends_it(
    page: Any, stack: Any, people: dict[str, dict[str, Any]]
) -> None:
    from playwright.sync_api import expect

    member = people["member"]
    sign_in(page, stack, email=member["email"], password=PASSWORD)
    cookie = next(c for c in page.context.cookies() if c["name"] == "lt_console_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    quota = httpx.get(
        f"{stack.gateway_url}/v1/users/me/quota",
        headers={"Authorization": f"Bearer {member['api_key']}"},
        timeout=30,
    ).json()
    assert quota["pools"], quota
    for pool in quota["pools"]:
        card = page.locator(f'[data-pool="{pool["id"]}"]')
        for name in ("limit", "used", "reserved", "remaining"):
            expect(card.locator(f'[data-field="{name}"]')).to_have_text(f"{pool[name]:,}")
    expect(page.get_by_role("link", name="Users")).to_have_count(0)  # no admin links for a member
    # By keyboard: the first Tab reaches the skip link, the next ones the navigation.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Overview")).to_be_focused()

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/console/login$"))
    page.goto(f"{stack.gateway_url}/console/overview")
    expect(page).to_have_url(re.compile(r"/console/login$"))


def test_a_wrong_password_is_refused_without_saying_why(
    page: Any, stack: Any, people: dict[str, Any]
) -> None:
    from playwright.sync_api import expect

    page.goto(f"{stack.gateway_url}/console/login")
    page.get_by_label("Email").fill(people["member"]["email"])
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#signin-error")).to_have_text(re.compile("did not work"))


def test_a_new_key_is_shown_once_and_can_be_revoked(page: Any, stack: Any, people: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    member = people["member"]
    sign_in(page, stack, api_key=member["api_key"])
    page.get_by_role("link", name="Keys").click()
    name = f"laptop {uuid.uuid4().hex[:6]}"
    page.get_by_label("Name").fill(name)
    page.get_by_role("button", name="Create key").click()
    shown = page.get_by_test_id("new-key")
    expect(shown).to_be_visible()
    new_key = shown.input_value()
    me = httpx.get(
        f"{stack.gateway_url}/v1/users/me", headers={"Authorization": f"Bearer {new_key}"}, timeout=30
    )
    assert me.status_code == 200 and me.json()["id"] == member["id"]
    page.reload()  # the page a POST redirected to: reloading neither posts again nor shows the key again
    expect(page.get_by_test_id("new-key")).to_have_count(0)
    assert new_key not in page.content()

    expect(page.get_by_role("row", name=re.compile(name))).to_have_count(1)
    page.get_by_role("button", name=f"Revoke key {name}").click()
    expect(page.locator(".flash.ok")).to_have_text("Key revoked.")
    expect(page.get_by_role("row", name=re.compile(name)).get_by_text("revoked")).to_be_visible()
    me = httpx.get(
        f"{stack.gateway_url}/v1/users/me", headers={"Authorization": f"Bearer {new_key}"}, timeout=30
    )
    assert me.status_code == 401


def test_a_purchase_moves_to_completed_live(page: Any, stack: Any, people: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    sign_in(page, stack, email=people["member"]["email"], password=PASSWORD)
    page.get_by_role("link", name="Purchases").click()
    page.get_by_label("Tokens").fill("5000")
    page.get_by_role("button", name="Buy").click()
    # The status is polled by htmx on the same page until it is final.
    expect(page.get_by_test_id("purchase-status")).to_have_text("COMPLETED", timeout=45_000)
    purchase_id = page.url.rsplit("/", 1)[-1]
    detail = httpx.get(
        f"{stack.gateway_url}/v1/purchases/{purchase_id}",
        headers={"Authorization": f"Bearer {people['member']['api_key']}"},
        timeout=30,
    ).json()
    assert detail["status"] == "COMPLETED" and detail["amount"] == 5000


def test_a_members_request_is_approved_by_the_manager(
    browser: Any, stack: Any, people: dict[str, Any]
) -> None:
    from playwright.sync_api import expect

    member_ctx = browser.new_context()
    manager_ctx = browser.new_context()
    try:
        member, manager = member_ctx.new_page(), manager_ctx.new_page()
        sign_in(member, stack, email=people["member"]["email"], password=PASSWORD)
        member.get_by_role("link", name="Approvals").click()
        member.get_by_label("Credits").fill("1234")
        member.get_by_label("Why").fill("e2e: a bigger batch")
        member.get_by_role("button", name="Request approval").click()
        expect(member.locator(".flash.ok")).to_be_visible()
        row = member.get_by_role("row", name=re.compile("e2e: a bigger batch"))
        expect(row).to_contain_text("pending")

        sign_in(manager, stack, email=people["manager"]["email"], password=PASSWORD)
        expect(manager.get_by_role("link", name="Team")).to_be_visible()
        manager.get_by_role("link", name="Approvals").click()
        manager.get_by_role("row", name=re.compile("e2e: a bigger batch")).get_by_role(
            "button", name="Approve"
        ).click()
        expect(manager.locator(".flash.ok")).to_have_text("Approved.")
        manager.get_by_role("link", name="Team").click()
        expect(manager.get_by_role("cell", name=people["member"]["email"])).to_be_visible()

        member.reload()
        expect(member.get_by_role("row", name=re.compile("e2e: a bigger batch"))).to_contain_text("approved")
    finally:
        member_ctx.close()
        manager_ctx.close()


ADMIN_PAGES = {
    "Users": "Users",
    "Teams": "Teams",
    "Pools": "Pools",
    "Org": "Org settings",
    "Anomalies": "Anomalies and freezes",
    "Thresholds": "Detection thresholds",
    "Channels": "Notification channels",
}


def test_admin_pages_load_and_a_freeze_is_lifted(
    page: Any, stack: Any, api: httpx.Client, people: dict[str, Any]
) -> None:
    from playwright.sync_api import expect

    sign_in(page, stack, api_key=stack.admin_key)
    for link, heading in ADMIN_PAGES.items():
        page.get_by_role("link", name=link, exact=True).click()
        expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
        expect(page.locator(".state.error, .state.forbidden")).to_have_count(0)

    # At phone width every page fits: nothing wider than the screen (tables scroll inside their box).
    page.set_viewport_size({"width": 375, "height": 740})
    for path in ["overview", "keys", "sessions", "purchases", "approvals", "team"] + [
        f"admin/{p}" for p in ("users", "teams", "pools", "org", "anomalies", "thresholds", "channels")
    ]:
        page.goto(f"{stack.gateway_url}/console/{path}")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, (path, width)
    page.set_viewport_size({"width": 1280, "height": 900})

    member = people["member"]
    page.get_by_role("link", name="Anomalies", exact=True).click()
    page.get_by_label("What").select_option("user")
    page.get_by_label("Id").fill(member["id"])
    page.get_by_label("Reason").fill("e2e console freeze")
    page.get_by_role("button", name="Freeze", exact=True).click()
    expect(page.locator(".flash.ok")).to_contain_text("Froze user")
    frozen = [f for f in api.get("/v1/admin/freezes").json()["data"] if f["target_id"] == member["id"]]
    assert frozen, "the freeze did not reach the API"

    page.get_by_role("button", name=f"Unfreeze user {member['id']}").click()
    expect(page.locator(".flash.ok")).to_contain_text("Unfroze user")
    expect(page.locator(f'[data-freeze="user:{member["id"]}"]')).to_have_count(0)
    left = [f for f in api.get("/v1/admin/freezes").json()["data"] if f["target_id"] == member["id"]]
    assert left == []

    # Org settings: a bucket size saved through the form is what the API then answers.
    before = api.get("/v1/admin/org").json()["key_requests_per_period"]
    page.get_by_role("link", name="Org", exact=True).click()
    page.get_by_label("Key requests per period").fill("12345")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".flash.ok")).to_have_text("Org settings saved.")
    assert api.get("/v1/admin/org").json()["key_requests_per_period"] == 12345
    page.get_by_label("Key requests per period").fill("" if before is None else str(before))  # as it was
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".flash.ok")).to_have_text("Org settings saved.")
    assert api.get("/v1/admin/org").json()["key_requests_per_period"] == before

    # A channel added here and a test send: offline its host does not resolve, and the page says so.
    page.get_by_role("link", name="Channels", exact=True).click()
    name = f"e2e hook {uuid.uuid4().hex[:6]}"
    page.get_by_label("Name").fill(name)
    page.get_by_label("URL").fill("https://hooks.example.com/leaky-tokens-e2e")
    page.get_by_role("button", name="Add", exact=True).click()
    expect(page.locator(".flash.ok")).to_have_text("Channel added.")
    page.get_by_role("row", name=re.compile(name)).get_by_role("button", name="Send a test").click()
    expect(page.locator(".flash")).to_contain_text("Test")


def test_a_member_sees_the_apis_refusal_and_posts_without_the_token_are_403(
    page: Any, stack: Any, people: dict[str, Any]
) -> None:
    from playwright.sync_api import expect

    sign_in(page, stack, api_key=people["member"]["api_key"])
    page.goto(f"{stack.gateway_url}/console/admin/users")
    expect(page.locator(".state.forbidden")).to_contain_text("Not for your role.")
    # The session cookie rides along (same origin) but the form token is missing: refused, nothing created.
    r = page.request.post(f"{stack.gateway_url}/console/keys", form={"name": "forged"})
    assert r.status == 403
    r = page.request.post(f"{stack.gateway_url}/console/keys", form={"name": "forged", "csrf_token": "x"})
    assert r.status == 403
    keys = httpx.get(
        f"{stack.gateway_url}/v1/users/me/keys",
        headers={"Authorization": f"Bearer {people['member']['api_key']}"},
        timeout=30,
    ).json()["data"]
    assert not [k for k in keys if k["name"] == "forged"]
