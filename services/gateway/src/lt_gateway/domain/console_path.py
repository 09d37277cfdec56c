"""Which `/console/...` requests the gateway forwards to the web console: plain paths and short queries only."""

from __future__ import annotations

import re

from leaky_common.errors import InvalidRequest
from lt_gateway.domain.routing import normal_segments

CONSOLE_PREFIX = "/console"
# Console paths are made of ids, names and file names; nothing else needs to reach it.
_SEGMENT = re.compile(r"^[A-Za-z0-9_.:@-]{1,200}$")
_MAX_QUERY = 1024
_QUERY = re.compile(rb"^[A-Za-z0-9_.~%&=+:@,-]*$")


def console_target(raw_path: bytes, path: str, query: bytes) -> tuple[str, str]:
    """The path and query to forward (both as the client encoded them); 400 `invalid_path` for anything else."""
    trimmed = path[:-1] if path.endswith("/") and path != "/" else path
    raw_trimmed = raw_path[:-1] if raw_path.endswith(b"/") else raw_path
    segments = normal_segments(raw_trimmed, trimmed)
    if segments[:1] != ["console"] or not all(_SEGMENT.match(s) for s in segments[1:]):
        raise InvalidRequest("not a console path", code="invalid_path")
    if len(query) > _MAX_QUERY or not _QUERY.match(query):
        raise InvalidRequest("the query string is not accepted", code="invalid_query")
    return raw_path.decode("latin-1"), query.decode("latin-1")
