"""The fake payment provider's state: in memory, and optionally in a JSON file that survives restarts."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

__all__ = ["Store"]


@dataclass
class Store:
    """Intents, refunds and idempotent replies; `path`, if set, is rewritten after every change."""

    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    # (api key, idempotency key) -> (request fingerprint, status, body)
    idempotent: dict[tuple[str, str], tuple[str, int, dict[str, Any]]] = field(default_factory=dict)
    in_flight: set[tuple[str, str]] = field(default_factory=set)
    path: Path | None = None

    def save(self) -> None:
        """Write the state to `path` (atomically), if there is one."""
        if self.path is None:
            return
        idempotent = [[list(k), *v] for k, v in self.idempotent.items()]
        data = {"intents": self.intents, "refunds": self.refunds, "idempotent": idempotent}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(data))
        os.replace(tmp, self.path)

    @classmethod
    def load(cls, path: Path | None) -> Store:
        """The state saved at `path`, or an empty one."""
        store = cls(path=path)
        if path is not None and path.exists():
            data = orjson.loads(path.read_bytes())
            store.intents, store.refunds = data["intents"], data["refunds"]
            store.idempotent = {
                (k[0], k[1]): (fp, status, body) for k, fp, status, body in data["idempotent"]
            }
        return store
