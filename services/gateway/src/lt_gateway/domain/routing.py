"""Which service owns each management path, and which request headers travel with it to the owner.

The gateway forwards a path only once it is normal (no dot segments, no encoded dots, slashes, backslashes or
percent signs, no empty segments) and matches one of the owners' public routes below; everything else is a
400 or a 404 here, so no path can reach an owner's `/internal/*` routes or anything it does not publish.
`tests/structure/test_gateway_routes.py` checks this table against the services' own routes.
"""

from __future__ import annotations

from dataclasses import dataclass

from leaky_common.errors import InvalidRequest

# Each owner's public routes; `{}` is one path segment.
PUBLIC_ROUTES: dict[str, tuple[str, ...]] = {
    "quota": (
        "/v1/admin/users",
        "/v1/admin/users/{}",
        "/v1/admin/users/{}/quota",
        "/v1/admin/users/{}/keys",
        "/v1/admin/users/{}/keys/{}",
        "/v1/admin/users/{}/primary-team",
        "/v1/admin/teams",
        "/v1/admin/teams/{}/members/{}",
        "/v1/admin/teams/{}/buckets",
        "/v1/admin/orgs",
        "/v1/admin/org",
        "/v1/admin/pools",
        "/v1/admin/pools/{}",
        "/v1/admin/sessions",
        "/v1/admin/sessions/{}",
        "/v1/admin/sessions/{}/budget",
        "/v1/admin/sessions/{}/reset",
        "/v1/admin/freezes",
        "/v1/admin/freezes/{}/{}",
        "/v1/users/me",
        "/v1/users/me/quota",
        "/v1/users/me/status",
        "/v1/users/me/password",
        "/v1/users/me/privacy",
        "/v1/users/me/teams",
        "/v1/users/me/keys",
        "/v1/users/me/keys/{}",
        "/v1/users/me/keys/{}/rotate",
        "/v1/approvals",
        "/v1/approvals/pending",
        "/v1/approvals/{}/approve",
        "/v1/approvals/{}/reject",
        "/api/v1/tokens/status",
        "/api/v1/tokens/quota",
        "/api/v1/tokens/quota/org",
        "/api/v1/tokens/consume",
    ),
    "saga": (
        "/v1/purchases",
        "/v1/purchases/{}",
        "/v1/admin/purchases",
        "/api/v1/tokens/purchase",
        "/api/v1/tokens/purchase/{}",
    ),
    "analytics": (
        "/v1/analytics/leaderboard",
        "/v1/analytics/baseline",
        "/v1/analytics/timeseries",
        "/v1/analytics/thresholds",
        "/v1/analytics/usage",
        "/v1/analytics/report",
        "/v1/analytics/anomalies",
        "/api/v1/analytics/usage",
        "/api/v1/analytics/report",
        "/api/v1/analytics/anomalies",
    ),
    "notifier": (
        "/v1/admin/notifications/webhooks",
        "/v1/admin/notifications/webhooks/{}",
        "/v1/admin/notifications/deliveries",
        "/v1/admin/notifications/deliveries/{}/retry",
        "/v1/admin/notifications/channels",
        "/v1/admin/notifications/channels/{}",
        "/v1/admin/notifications/channels/{}/test",
    ),
}
FORWARD_REQUEST_HEADERS = ("content-type", "idempotency-key", "accept", "x-session-id", "x-privacy-mode")

# Encodings that could turn into path structure once some hop decodes them again.
_FORBIDDEN_RAW = (b"%2e", b"%2f", b"%5c", b"%25", b"%00", b"\\")
_MAX_PATH = 2048


@dataclass(frozen=True, slots=True)
class _Template:
    segments: tuple[str | None, ...]  # None: any one segment
    owner: str


def _compile() -> dict[int, list[_Template]]:
    table: dict[int, list[_Template]] = {}
    for owner, templates in PUBLIC_ROUTES.items():
        for template in templates:
            parts = tuple(None if p == "{}" else p for p in template.strip("/").split("/"))
            table.setdefault(len(parts), []).append(_Template(parts, owner))
    # Literal segments before wildcards: `/v1/approvals/pending` is not `/v1/approvals/{}`.
    for candidates in table.values():
        candidates.sort(key=lambda t: tuple(s is None for s in t.segments))
    return table


_TABLE = _compile()


def normal_segments(raw_path: bytes, path: str) -> list[str]:
    """The segments of a path that is safe to forward; 400 (`invalid_path`) for anything else."""
    lowered = raw_path.lower()
    if len(raw_path) > _MAX_PATH or any(bad in lowered for bad in _FORBIDDEN_RAW) or "\\" in path:
        raise InvalidRequest("the path contains encoded separators or dots", code="invalid_path")
    segments = path.split("/")[1:]
    if any(s in ("", ".", "..") for s in segments) or any(not s.isprintable() for s in segments):
        raise InvalidRequest("the path is not in normal form", code="invalid_path")
    return segments


def owner_of(segments: list[str]) -> str | None:
    """Which service publishes a route matching these path segments, or None."""
    for template in _TABLE.get(len(segments), ()):
        if all(t is None or t == s for t, s in zip(template.segments, segments, strict=True)):
            return template.owner
    return None
