"""`make up`'s start-up check, beside stack.py: the gateway's deep probe, and a word about a frozen admin.

The check calls the gateway's `GET /internal/probe` with a caller assertion (signed with the stack's key): gateway -> quota (its zero-cost
admission check) -> the provider, end to end. It is not a governed request (no API key, no admission, no usage
event), so no detector, usage report or budget sees it, however often the stack restarts, and no freeze can
fail it. Then, if the bootstrap admin's key or user is frozen, `make up` says so and prints the command that
lifts the freeze: the stack still starts.

The admin cannot lift a freeze on its own key (a frozen key changes nothing, docs/security.md), so the
command is the operator's break-glass, `stack.py unfreeze-admin` (`lift_admin_freezes`): whoever holds the
stack's run directory holds its signing key, and signs for the bootstrap admin, as the gateway would, a call
straight to quota that lifts every freeze on the admin's user, keys and sessions.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from leaky_common.auth import AssertionSigner, Principal

__all__ = ["admin_freeze_notices", "lift_admin_freezes", "wait_for_probe"]

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


def _call(url: str, headers: dict[str, str], method: str = "GET", body: bytes | None = None) -> Any:
    req = urllib.request.Request(url, data=body, headers=headers, method=method)  # noqa: S310 - local URLs
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
        return json.loads(resp.read())


def _shown(value: object) -> str:
    """A stored value (a freeze's reason is an admin's text, a session id a client's) as printed to the
    operator's terminal: control characters (escape sequences, new lines) replaced, at most 200 characters."""
    text = "".join(c if c.isprintable() else "?" for c in str(value))
    return text if len(text) <= 200 else text[:199] + "…"


def _admin_freezes(get: Callable[[str], Any]) -> list[dict[str, Any]]:
    """The freezes on the bootstrap admin (its user, keys or sessions), read with `get(path)` as the admin."""
    me = get("/v1/users/me")["id"]
    keys = {k["id"] for k in get("/v1/users/me/keys")["data"]}
    return [
        f
        for f in get("/v1/admin/freezes")["data"]
        if f.get("user_id") == me
        or (f["target_type"] == "user" and f["target_id"] == me)
        or f["target_id"] in keys
    ]


def admin_freeze_notices(gateway: str, admin_key: str, run_dir: Path) -> list[str]:
    """What is frozen of the bootstrap admin, each with the command that lifts it.

    A freeze stops the admin's completions (403 `frozen`) and its changes, not its reads. Never raises: a
    failed look-up is one line saying so."""
    try:
        found = _admin_freezes(
            lambda path: _call(f"{gateway}{path}", {"Authorization": f"Bearer {admin_key}"})
        )
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError) as exc:
        return [f"could not check whether the bootstrap admin is frozen: {exc!r}"]
    script = Path(__file__).with_name("stack.py")
    command = " ".join(
        shlex.quote(str(a)) for a in (sys.executable, script, "unfreeze-admin", "--run-dir", run_dir)
    )
    notices = []
    for f in found:
        until = f"until {f['expires_at']}" if f.get("expires_at") else "until lifted"
        notices.append(
            f"the bootstrap admin's {_shown(f['target_type'])} {_shown(f['target_id'])} is frozen {_shown(until)} "
            f"({_shown(f['source'])}: {_shown(f['reason'])}); its completions and changes get 403. Lift every "
            f"freeze on it with:\n  {command}"
        )
    return notices


def lift_admin_freezes(run_dir: Path) -> list[str]:
    """The operator's break-glass: lift every freeze on the bootstrap admin by calling quota directly with an
    assertion signed with the stack's own key (as the gateway would sign for the admin, the freeze left out);
    one line per freeze lifted. Raises on a stack that is not running or a refused call."""
    state = json.loads((run_dir / "stack.json").read_text())
    quota = f"http://127.0.0.1:{int(state['ports']['quota'])}"
    signer = AssertionSigner(
        (run_dir / "internal_signing_key").read_text().strip(), "dev-1", issuer="operator-break-glass"
    )
    api_key = json.dumps({"api_key": (run_dir / "admin_key").read_text().strip()}).encode()
    principal = Principal.model_validate(
        _call(
            f"{quota}/internal/authenticate",
            {**signer.headers("quota"), "Content-Type": "application/json"},
            "POST",
            api_key,
        )
    ).model_copy(update={"management_block": None})

    def as_admin() -> dict[str, str]:  # a fresh assertion per call
        return signer.headers("quota", principal)

    lifted = []
    for f in _admin_freezes(lambda path: _call(f"{quota}{path}", as_admin())):
        path = f"/v1/admin/freezes/{f['target_type']}/{urllib.parse.quote(f['target_id'], safe='')}"
        answer = _call(f"{quota}{path}", as_admin(), "DELETE")
        lifted.append(f"lifted the freeze on the bootstrap admin's {_shown(f['target_type'])} "
                      f"{_shown(f['target_id'])} ({_shown(f['source'])}: {_shown(f['reason'])}): {_shown(answer)}")  # fmt: skip
    return lifted
