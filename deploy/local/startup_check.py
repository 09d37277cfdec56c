"""`make up`'s start-up check, beside stack.py: the gateway's deep probe, and a word about a frozen admin.

The check calls the gateway's `GET /internal/probe` with a caller assertion (signed with the stack's key): gateway -> quota (its zero-cost
admission check) -> the provider, end to end. It is not a governed request (no API key, no admission, no usage
event), so no detector, usage report or budget sees it, however often the stack restarts, and no freeze can
fail it. Then, if the bootstrap admin's key or user is frozen, `make up` says so and prints the command that
lifts the freeze: the stack still starts.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["admin_freeze_notices", "wait_for_probe"]

# The model the probe reaches the provider with (`make up` routes mock-gpt unless LT_MODELS_FILE says otherwise).
PROBE_MODEL_ENV = "LT_STARTUP_PROBE_MODEL"


def wait_for_probe(gateway: str, internal_headers: Callable[[], dict[str, str]], deadline: float) -> None:
    """Call the deep probe (with a fresh caller assertion each time) until it answers 200; TimeoutError with its
    last answer at `deadline`."""
    model = urllib.parse.quote(os.environ.get(PROBE_MODEL_ENV, "mock-gpt"), safe="")
    last = "no answer"
    while True:
        req = urllib.request.Request(  # noqa: S310 - a local URL we built
            f"{gateway}/internal/probe?model={model}", headers=internal_headers()
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
                if resp.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code} {exc.read()[:500].decode(errors='replace')}"
        except (urllib.error.URLError, OSError) as exc:
            last = repr(exc)
        if time.monotonic() > deadline:
            raise TimeoutError(f"the gateway's probe (gateway -> quota -> provider) did not pass: {last}")
        time.sleep(0.2)


def _get(gateway: str, admin_key: str, path: str) -> Any:
    req = urllib.request.Request(  # noqa: S310 - a local URL we built
        f"{gateway}{path}", headers={"Authorization": f"Bearer {admin_key}"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
        return json.loads(resp.read())


def admin_freeze_notices(gateway: str, admin_key: str, key_file: Path) -> list[str]:
    """What is frozen of the bootstrap admin (its user, keys or sessions), each with the command that lifts it.

    A freeze stops the admin's completions (403 `frozen`) but not the admin API, so the admin can always lift
    it. Never raises: a failed look-up is one line saying so."""
    try:
        me = _get(gateway, admin_key, "/v1/users/me")["id"]
        keys = {k["id"] for k in _get(gateway, admin_key, "/v1/users/me/keys")["data"]}
        freezes = _get(gateway, admin_key, "/v1/admin/freezes")["data"]
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError) as exc:
        return [f"could not check whether the bootstrap admin is frozen: {exc!r}"]
    notices = []
    for f in freezes:
        target, target_id = f["target_type"], f["target_id"]
        if f.get("user_id") != me and not (target == "user" and target_id == me) and target_id not in keys:
            continue
        until = f"until {f['expires_at']}" if f.get("expires_at") else "until lifted"
        path = f"/v1/admin/freezes/{target}/{urllib.parse.quote(target_id, safe='')}"
        notices.append(
            f"the bootstrap admin's {target} {target_id} is frozen {until} ({f['source']}: {f['reason']});"
            " its completions get 403 `frozen`, the admin API still works. Lift it with:\n"
            f"  curl -sS -X DELETE -H \"Authorization: Bearer $(cat '{key_file}')\" '{gateway}{path}'"
        )
    return notices
