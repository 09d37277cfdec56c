"""Console sessions: tokens kept server-side, keyed by a random id that is the only thing in the cookie.

The cookie carries nothing but an unguessable id (HttpOnly, SameSite=Strict), so neither page scripts nor
other sites can read or ride it, and signing out or expiry ends the session here at once. Each session has
its own CSRF token, checked on every POST. Sessions live in this process's memory: a restart signs everyone
out, which a console can afford (the tokens themselves stay valid at the gateway until they expire).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

COOKIE = "lt_console_session"
LOGIN_CSRF_COOKIE = "lt_console_login_csrf"


@dataclass(slots=True)
class Session:
    """A signed-in user: their bearer token (an access token or an API key) and what the pages need."""

    id: str
    csrf: str
    access_token: str
    refresh_token: str | None
    expires_at: float | None  # monotonic; None for an API key
    user_id: str
    email: str
    role: str
    manages_team: bool
    last_used: float = field(default_factory=time.monotonic)
    flash: str | None = None
    flash_error: bool = False
    # A secret made by the last POST (a new API key), shown by the next page only, then forgotten.
    reveal: dict[str, object] | None = None

    def needs_refresh(self, now: float, margin_s: float = 30.0) -> bool:
        """True when the access token expires within `margin_s` and can be refreshed."""
        return (
            self.refresh_token is not None
            and self.expires_at is not None
            and now >= self.expires_at - margin_s
        )


class SessionStore:
    """In-memory sessions with idle expiry and a size cap (least recently used go first)."""

    def __init__(self, idle_s: int, max_sessions: int) -> None:
        self._idle_s = idle_s
        self._max = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def create(
        self,
        *,
        access_token: str,
        refresh_token: str | None,
        expires_in: float | None,
        user: dict[str, object],
        manages_team: bool,
    ) -> Session:
        """A new session with fresh random id and CSRF token."""
        now = time.monotonic()
        session = Session(
            id=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            access_token=access_token,
            refresh_token=refresh_token,
            expires_at=now + expires_in if expires_in is not None else None,
            user_id=str(user.get("id", "")),
            email=str(user.get("email", "")),
            role=str(user.get("role", "user")),
            manages_team=manages_team,
        )
        self._sessions[session.id] = session
        while len(self._sessions) > self._max:
            self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session with this id, or None (unknown or idle too long)."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = time.monotonic()
        if now - session.last_used > self._idle_s:
            del self._sessions[session_id]
            return None
        session.last_used = now
        self._sessions.move_to_end(session_id)
        return session

    def drop(self, session_id: str) -> None:
        """Forget a session (sign-out)."""
        self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._sessions)


def same_token(expected: str, given: str | None) -> bool:
    """Constant-time comparison of CSRF tokens."""
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())
