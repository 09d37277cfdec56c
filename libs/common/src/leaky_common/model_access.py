"""Which models a key or a pool covers: one matcher for the gateway (model lists) and quota (admission).

A scope is a model name or a shell-style glob (`gpt-4o*`); `""` and `"*"` cover every model. A key's
`allowed_models` of None allows every model; a list allows the models any of its patterns cover.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

__all__ = ["model_allowed", "model_in_scope"]


def model_in_scope(pattern: str, model: str) -> bool:
    """True if `model` is in the scope `pattern` ("" or "*" = every model; globs allowed, case-sensitive)."""
    return pattern in ("", "*") or fnmatch.fnmatchcase(model, pattern)


def model_allowed(allowed_models: Iterable[str] | None, model: str) -> bool:
    """True if a key with `allowed_models` (None = every model) may call `model`."""
    return allowed_models is None or any(model_in_scope(p, model) for p in allowed_models)
