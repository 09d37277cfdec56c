"""The routing table: the built-in models plus those of the routing file (`LT_MODELS_FILE`, a JSON list)."""

from __future__ import annotations

from pathlib import Path

import orjson
from pydantic import ValidationError

from lt_gateway.adapters.pricing_table import shipped_table
from lt_gateway.domain.models import BUILTIN, ModelSpec, resolve_entry
from lt_gateway.domain.pricing import PriceLookup


class ModelTable:
    """Looks up models by the name clients send."""

    def __init__(self, specs: list[ModelSpec]) -> None:
        self._by_name = {s.name: s for s in specs}
        self._sorted = sorted(self._by_name.values(), key=lambda s: s.name)
        for spec in specs:
            for fb in spec.fallbacks:
                if fb not in self._by_name:
                    raise ValueError(f"model {spec.name}: fallback {fb!r} is not in the routing table")

    @classmethod
    def load(cls, path: Path | None, pricing: PriceLookup | None = None) -> ModelTable:
        """The built-in table, plus (overriding by name) the models in `path` if given."""
        table = pricing or shipped_table()
        specs = {str(s["name"]): ModelSpec.model_validate(s) for s in BUILTIN}
        if path is not None:
            entries = orjson.loads(path.read_bytes())
            if not isinstance(entries, list):
                raise ValueError(f"{path}: the routing file must be a JSON list of models")
            for raw in entries:
                try:
                    spec = resolve_entry(raw, table)
                except ValidationError as exc:
                    raise ValueError(f"{path}: bad model entry {raw.get('name')!r}: {exc}") from exc
                specs[spec.name] = spec
        return cls(list(specs.values()))

    def get(self, name: str) -> ModelSpec | None:
        """The spec for `name`, or None."""
        return self._by_name.get(name)

    def all(self) -> list[ModelSpec]:
        """Every model, sorted by name."""
        return self._sorted
