"""The pricing table: LiteLLM's model map, trimmed to the providers the gateway speaks, as integers.

Prices are micro-dollars per million tokens (LiteLLM's USD-per-token floats times 10^12, converted exactly
through Decimal). The table ships as `data/pricing.json`; refresh it with

    python -m lt_gateway.pricing refresh [--litellm-version 1.106.2 | --source model_prices.json]

which reads `model_prices_and_context_window_backup.json` from a given file or from the litellm wheel
(downloaded with pip, never imported), and rewrites the shipped file.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

PRICING_FILE = Path(__file__).parent / "data" / "pricing.json"
DEFAULT_LITELLM_VERSION = "1.106.2"
_LITELLM_MEMBER = "litellm/model_prices_and_context_window_backup.json"
# LiteLLM provider names kept in the shipped table.
KEPT_PROVIDERS = frozenset(
    {
        "openai",
        "text-completion-openai",
        "azure",
        "anthropic",
        "gemini",
        "dashscope",
        "deepseek",
        "groq",
        "mistral",
        "ollama",
        "together_ai",
        "xai",
    }
)
KEPT_MODES = frozenset({"chat", "completion", "embedding", "responses"})


@dataclass(frozen=True, slots=True)
class Price:
    """One model's prices (micro-dollars per million tokens) and limits."""

    provider: str
    mode: str
    input: int
    output: int
    cache_read: int | None
    cache_write: int | None
    max_output_tokens: int | None
    max_input_tokens: int | None


def _micros_per_mtok(usd_per_token: Any) -> int | None:
    if not isinstance(usd_per_token, int | float) or isinstance(usd_per_token, bool):
        return None
    return int((Decimal(str(usd_per_token)) * 10**12).to_integral_value())


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def trim(litellm_map: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The entries of LiteLLM's map the gateway can use, converted to integer prices."""
    out: dict[str, dict[str, Any]] = {}
    for name, entry in sorted(litellm_map.items()):
        if not isinstance(entry, dict) or entry.get("litellm_provider") not in KEPT_PROVIDERS:
            continue
        if entry.get("mode") not in KEPT_MODES:
            continue
        price_in = _micros_per_mtok(entry.get("input_cost_per_token"))
        if price_in is None:
            continue
        out[name] = {
            "provider": entry["litellm_provider"],
            "mode": entry["mode"],
            "input": price_in,
            "output": _micros_per_mtok(entry.get("output_cost_per_token")) or 0,
            "cache_read": _micros_per_mtok(entry.get("cache_read_input_token_cost")),
            "cache_write": _micros_per_mtok(entry.get("cache_creation_input_token_cost")),
            "max_output_tokens": _int_or_none(entry.get("max_output_tokens")),
            "max_input_tokens": _int_or_none(entry.get("max_input_tokens")),
        }
    return out


class PricingTable:
    """Looks prices up by model name, with or without a provider prefix (`gemini/gemini-2.0-flash`)."""

    def __init__(self, models: dict[str, dict[str, Any]], source: str = "") -> None:
        self.source = source
        self._models = models

    @classmethod
    def load(cls, path: Path = PRICING_FILE) -> PricingTable:
        """Read a table written by `refresh`."""
        raw = orjson.loads(path.read_bytes())
        return cls(raw["models"], raw.get("source", ""))

    def __len__(self) -> int:
        return len(self._models)

    def get(self, model: str, provider: str | None = None) -> Price | None:
        """The price of `model`, trying `provider/model` first when a LiteLLM provider prefix is given."""
        candidates = [f"{provider}/{model}", model] if provider else [model]
        for name in candidates:
            entry = self._models.get(name)
            if entry is not None:
                return Price(**entry)
        return None


@lru_cache(maxsize=1)
def shipped_table() -> PricingTable:
    """The table shipped with the package (read once)."""
    return PricingTable.load()


def _pip_command() -> list[str]:
    """A pip to download with: this interpreter's, one on PATH, or uv's `uvx pip` (uv venvs have no pip)."""
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    for name in ("pip3", "pip"):
        found = shutil.which(name)
        if found:
            return [found]
    uvx = shutil.which("uvx")
    if uvx:
        return [uvx, "pip"]
    raise SystemExit("no pip found to download litellm with; pass --source FILE instead")


def _litellm_map_from_wheel(version: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [*_pip_command(), "download", f"litellm=={version}", "--no-deps", "-q", "-d", tmp], check=True
        )
        wheel = next(Path(tmp).glob("litellm-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            data: dict[str, Any] = orjson.loads(zf.read(_LITELLM_MEMBER))
            return data


def refresh(source: Path | None, version: str, out: Path = PRICING_FILE) -> int:
    """Rewrite the shipped table from LiteLLM's map; returns the number of models kept."""
    if source is not None:
        litellm_map = orjson.loads(source.read_bytes())
        origin = f"{source.name} (local file)"
    else:
        litellm_map = _litellm_map_from_wheel(version)
        origin = f"litellm {version} {Path(_LITELLM_MEMBER).name}"
    models = trim(litellm_map)
    out.write_bytes(
        orjson.dumps(
            {"source": origin, "unit": "usd_micros_per_million_tokens", "models": models},
            option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS,
        )
        + b"\n"
    )
    return len(models)


def main(argv: list[str] | None = None) -> None:
    """`python -m lt_gateway.pricing refresh`."""
    parser = argparse.ArgumentParser(prog="python -m lt_gateway.pricing")
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("refresh", help="rebuild data/pricing.json from LiteLLM's model map")
    cmd.add_argument("--source", type=Path, help="a model_prices_and_context_window.json to read")
    cmd.add_argument("--litellm-version", default=DEFAULT_LITELLM_VERSION)
    cmd.add_argument("--out", type=Path, default=PRICING_FILE)
    args = parser.parse_args(argv)
    count = refresh(args.source, args.litellm_version, args.out)
    print(f"wrote {count} models to {args.out}")


if __name__ == "__main__":
    main()
