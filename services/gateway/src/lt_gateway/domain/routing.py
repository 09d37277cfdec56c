"""Which service owns each management path, and which request headers travel with it to the owner."""

from __future__ import annotations

# First match wins; see docs/architecture.md.
ROUTE_PREFIXES: tuple[tuple[str, str], ...] = (
    ("/v1/admin/notifications", "notifier"),
    ("/v1/admin/purchases", "saga"),
    ("/v1/admin/", "quota"),
    ("/v1/users/", "quota"),
    ("/v1/approvals", "quota"),
    ("/api/v1/tokens/purchase", "saga"),
    ("/api/v1/tokens/", "quota"),
    ("/v1/purchases", "saga"),
    ("/v1/analytics/", "analytics"),
    ("/api/v1/analytics/", "analytics"),
)
FORWARD_REQUEST_HEADERS = ("content-type", "idempotency-key", "accept", "x-session-id", "x-privacy-mode")


def owner_of(path: str) -> str | None:
    """Which service owns `path`, or None."""
    for prefix, owner in ROUTE_PREFIXES:
        base = prefix.rstrip("/")
        if path == base or path.startswith(base + "/"):
            return owner
    return None
