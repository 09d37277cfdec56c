"""The shipped pricing table (`data/pricing.json`, LiteLLM's model map trimmed and converted to integers).

`refresh` rewrites it from `model_prices_and_context_window_backup.json`, read from a given file or from the
litellm wheel (downloaded with pip, never imported); `python -m lt_gateway.pricing refresh` runs it.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tempfile
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from lt_gateway.domain.pricing import Price, trim

PRICING_FILE = Path(__file__).parent.parent / "data" / "pricing.json"
DEFAULT_LITELLM_VERSION = "1.106.2"
_LITELLM_MEMBER = "litellm/model_prices_and_context_window_backup.json"


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
