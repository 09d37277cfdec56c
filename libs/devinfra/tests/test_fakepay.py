import asyncio
from pathlib import Path

import httpx
import pytest

from leaky_devinfra.fakes.payments import create_fakepay_app

AUTH = {"Authorization": "Bearer sk_test_unit"}


def client(hang_s: float = 30.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_fakepay_app(hang_s=hang_s)), base_url="http://pay"
    )


def intent_form(method: str) -> dict[str, str]:
    return {
        "amount": "1500",
        "currency": "usd",
        "payment_method": method,
        "capture_method": "manual",
        "confirm": "true",
    }


async def test_visa_authorizes_captures_and_refunds() -> None:
    async with client() as c:
        r = await c.post("/v1/payment_intents", data=intent_form("pm_card_visa"), headers=AUTH)
        assert r.status_code == 200
        intent = r.json()
        assert intent["id"].startswith("pi_")
        assert intent["object"] == "payment_intent"
        assert (intent["amount"], intent["currency"], intent["status"]) == (1500, "usd", "requires_capture")
        r = await c.post(f"/v1/payment_intents/{intent['id']}/capture", headers=AUTH)
        assert r.status_code == 200
        assert r.json()["status"] == "succeeded"
        # A captured payment cannot be canceled, only refunded.
        r = await c.post(f"/v1/payment_intents/{intent['id']}/cancel", headers=AUTH)
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "payment_intent_unexpected_state"
        r = await c.post("/v1/refunds", data={"payment_intent": intent["id"]}, headers=AUTH)
        assert r.status_code == 200
        refund = r.json()
        assert refund["id"].startswith("re_")
        assert (refund["status"], refund["amount"]) == ("succeeded", 1500)


async def test_visa_authorization_can_be_canceled() -> None:
    async with client() as c:
        intent = (await c.post("/v1/payment_intents", data=intent_form("pm_card_visa"), headers=AUTH)).json()
        r = await c.post(f"/v1/payment_intents/{intent['id']}/cancel", headers=AUTH)
        assert r.status_code == 200
        assert r.json()["status"] == "canceled"
        r = await c.post(f"/v1/payment_intents/{intent['id']}/capture", headers=AUTH)
        assert r.status_code == 400


async def test_charge_declined() -> None:
    async with client() as c:
        r = await c.post("/v1/payment_intents", data=intent_form("pm_card_chargeDeclined"), headers=AUTH)
        assert r.status_code == 402
        error = r.json()["error"]
        assert (error["type"], error["code"]) == ("card_error", "card_declined")
        assert error["message"]


async def test_timeout_card_answers_only_after_the_hang() -> None:
    async with client(hang_s=0.5) as c:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await c.post("/v1/payment_intents", data=intent_form("pm_card_timeout"), headers=AUTH)
        started = asyncio.get_running_loop().time()
        r = await c.post("/v1/payment_intents", data=intent_form("pm_card_timeout"), headers=AUTH)
        assert asyncio.get_running_loop().time() - started >= 0.45
        assert r.status_code == 200
        assert r.json()["status"] == "requires_capture"


async def test_capture_fails_card_authorizes_then_fails_capture() -> None:
    async with client() as c:
        r = await c.post("/v1/payment_intents", data=intent_form("pm_card_captureFails"), headers=AUTH)
        assert r.status_code == 200
        intent = r.json()
        assert intent["status"] == "requires_capture"
        r = await c.post(f"/v1/payment_intents/{intent['id']}/capture", headers=AUTH)
        assert r.status_code == 402
        assert r.json()["error"]["type"] == "card_error"
        # The authorization is still there to be released.
        r = await c.post(f"/v1/payment_intents/{intent['id']}/cancel", headers=AUTH)
        assert r.json()["status"] == "canceled"


async def test_idempotency_key_replays_the_same_object() -> None:
    async with client() as c:
        headers = {**AUTH, "Idempotency-Key": "k1"}
        first = await c.post("/v1/payment_intents", data=intent_form("pm_card_visa"), headers=headers)
        second = await c.post("/v1/payment_intents", data=intent_form("pm_card_visa"), headers=headers)
        assert first.json() == second.json()
        assert second.headers["idempotent-replayed"] == "true"
        other = await c.post("/v1/payment_intents", data=intent_form("pm_card_visa"), headers=AUTH)
        assert other.json()["id"] != first.json()["id"]
        # Same key, different parameters: an idempotency error, not a new object.
        changed = await c.post(
            "/v1/payment_intents", data=intent_form("pm_card_captureFails"), headers=headers
        )
        assert changed.status_code == 400
        assert changed.json()["error"]["type"] == "idempotency_error"
        # Errors are replayed too.
        declined = {**AUTH, "Idempotency-Key": "k2"}
        d1 = await c.post("/v1/payment_intents", data=intent_form("pm_card_chargeDeclined"), headers=declined)
        d2 = await c.post("/v1/payment_intents", data=intent_form("pm_card_chargeDeclined"), headers=declined)
        assert d1.status_code == d2.status_code == 402
        assert d1.json() == d2.json()


async def test_requires_a_test_secret_key() -> None:
    async with client() as c:
        r = await c.post("/v1/payment_intents", data=intent_form("pm_card_visa"))
        assert r.status_code == 401
        r = await c.post(
            "/v1/payment_intents",
            data=intent_form("pm_card_visa"),
            headers={"Authorization": "Bearer sk_live_x"},
        )
        assert r.status_code == 401
        assert r.json()["error"]["type"] == "invalid_request_error"


async def test_unknown_payment_method_and_bad_amount() -> None:
    async with client() as c:
        r = await c.post(
            "/v1/payment_intents", data={**intent_form("pm_card_visa"), "amount": "1.5"}, headers=AUTH
        )
        assert r.status_code == 400
        r = await c.post("/v1/payment_intents", data=intent_form("pm_nope"), headers=AUTH)
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "resource_missing"


async def test_state_file_survives_a_restart_and_the_list_shows_captures_and_refunds(tmp_path: Path) -> None:
    state = tmp_path / "fakepay.json"

    def app_client() -> httpx.AsyncClient:
        app = create_fakepay_app(state_path=state)
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://pay")

    async with app_client() as c:
        form = {**intent_form("pm_card_visa"), "metadata[purchase_id]": "pur_1"}
        intent = (await c.post("/v1/payment_intents", data=form, headers=AUTH)).json()
        r = await c.post(
            f"/v1/payment_intents/{intent['id']}/capture", headers={**AUTH, "Idempotency-Key": "cap-1"}
        )
        assert r.status_code == 200
        r = await c.post("/v1/refunds", data={"payment_intent": intent["id"], "amount": "500"}, headers=AUTH)
        assert r.status_code == 200
    # A new process (a new app) reads the same file: the intent, the refund and the idempotent replay remain.
    async with app_client() as c:
        listed = await c.get("/v1/payment_intents", headers=AUTH)
        assert listed.status_code == 200
        body = listed.json()
        assert [(i["id"], i["status"], i["amount_received"]) for i in body["data"]] == [
            (intent["id"], "succeeded", 1500)
        ]
        assert body["data"][0]["metadata"] == {"purchase_id": "pur_1"}
        assert [r["amount"] for r in body["refunds"]] == [500]
        again = await c.post(
            f"/v1/payment_intents/{intent['id']}/capture", headers={**AUTH, "Idempotency-Key": "cap-1"}
        )
        assert again.headers.get("Idempotent-Replayed") == "true"
        assert (await c.get("/v1/payment_intents")).status_code == 401
