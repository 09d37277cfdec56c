"""Model routing table and prices.

Prices are integer micro-dollars per million tokens, so cost = ceil(tokens * price / 1e6) stays exact.
"""

from __future__ import annotations

from pathlib import Path

import orjson
from pydantic import BaseModel, ConfigDict, Field

# mock-gpt is priced like gpt-4o-mini ($0.15 / $0.60 per million tokens).
_BUILTIN: list[dict[str, object]] = [
    {
        "name": "mock-gpt",
        "provider": "mock",
        "upstream_model": "mock-gpt",
        "input_usd_micros_per_mtok": 150_000,
        "output_usd_micros_per_mtok": 600_000,
        "cached_input_usd_micros_per_mtok": 75_000,
        "max_output_tokens": 16_384,
        "context_window": 128_000,
    },
]


class ModelSpec(BaseModel):
    """One routable model."""

    model_config = ConfigDict(frozen=True)

    name: str
    provider: str
    upstream_model: str
    base_url: str | None = None
    api_key_env: str | None = None
    input_usd_micros_per_mtok: int = Field(ge=0)
    output_usd_micros_per_mtok: int = Field(ge=0)
    cached_input_usd_micros_per_mtok: int | None = Field(default=None, ge=0)
    max_output_tokens: int = Field(default=4096, ge=1)
    context_window: int = Field(default=128_000, ge=1)

    def cost_usd_micros(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> int:
        """Exact integer cost, rounded up to the micro-dollar."""
        cached = min(cached_tokens, prompt_tokens)
        cached_price = self.cached_input_usd_micros_per_mtok
        if cached_price is None:
            cached_price = self.input_usd_micros_per_mtok
        numerator = (
            (prompt_tokens - cached) * self.input_usd_micros_per_mtok
            + cached * cached_price
            + completion_tokens * self.output_usd_micros_per_mtok
        )
        return -(-numerator // 1_000_000)


class ModelTable:
    """Looks up models by the name clients send."""

    def __init__(self, specs: list[ModelSpec]) -> None:
        self._by_name = {s.name: s for s in specs}

    @classmethod
    def load(cls, path: Path | None) -> ModelTable:
        """The built-in table, plus (overriding by name) the models in `path` if given."""
        specs = {s["name"]: ModelSpec.model_validate(s) for s in _BUILTIN}
        if path is not None:
            for raw in orjson.loads(path.read_bytes()):
                spec = ModelSpec.model_validate(raw)
                specs[spec.name] = spec
        return cls(list(specs.values()))

    def get(self, name: str) -> ModelSpec | None:
        """The spec for `name`, or None."""
        return self._by_name.get(name)

    def all(self) -> list[ModelSpec]:
        """Every model, sorted by name."""
        return sorted(self._by_name.values(), key=lambda s: s.name)


def format_usd(micros: int) -> str:
    """Micro-dollars as a decimal string with six places, for headers and bodies."""
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    return f"{sign}{micros // 1_000_000}.{micros % 1_000_000:06d}"
