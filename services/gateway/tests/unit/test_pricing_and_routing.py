"""The pricing table (LiteLLM's map as integers) and routing-file resolution against it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lt_gateway.adapters.model_table import ModelTable
from lt_gateway.adapters.pricing_table import PricingTable, refresh, shipped_table
from lt_gateway.domain.models import resolve_entry
from lt_gateway.domain.pricing import trim

LITELLM_SAMPLE = {
    "sample_spec": {"input_cost_per_token": 0},
    "gpt-4o-mini": {
        "litellm_provider": "openai",
        "mode": "chat",
        "input_cost_per_token": 1.5e-07,
        "output_cost_per_token": 6e-07,
        "cache_read_input_token_cost": 7.5e-08,
        "max_output_tokens": 16384,
        "max_input_tokens": 128000,
    },
    "claude-x": {
        "litellm_provider": "anthropic",
        "mode": "chat",
        "input_cost_per_token": 3e-06,
        "output_cost_per_token": 1.5e-05,
        "cache_read_input_token_cost": 3e-07,
        "cache_creation_input_token_cost": 3.75e-06,
        "max_output_tokens": 8192,
    },
    "gemini/gemini-x": {"litellm_provider": "gemini", "mode": "chat", "input_cost_per_token": 1e-07},
    "some-image-model": {
        "litellm_provider": "openai",
        "mode": "image_generation",
        "input_cost_per_token": 1e-06,
    },
    "bedrock/x": {"litellm_provider": "bedrock", "mode": "chat", "input_cost_per_token": 1e-06},
}


def test_trim_keeps_supported_providers_and_converts_prices_exactly() -> None:
    table = trim(LITELLM_SAMPLE)
    assert set(table) == {"gpt-4o-mini", "claude-x", "gemini/gemini-x"}
    assert table["gpt-4o-mini"]["input"] == 150_000  # $0.15 per million tokens, in micro-dollars
    assert table["gpt-4o-mini"]["output"] == 600_000
    assert table["gpt-4o-mini"]["cache_read"] == 75_000
    assert table["claude-x"]["cache_write"] == 3_750_000
    assert table["gemini/gemini-x"]["output"] == 0


def test_refresh_writes_a_loadable_table(tmp_path: Path) -> None:
    source = tmp_path / "litellm.json"
    source.write_text(json.dumps(LITELLM_SAMPLE))
    out = tmp_path / "pricing.json"
    assert refresh(source, "unused", out) == 3
    table = PricingTable.load(out)
    price = table.get("gemini-x", "gemini")
    assert price is not None and price.input == 100_000
    assert table.get("gemini-x") is None  # provider-prefixed names need the provider


def test_shipped_table_has_the_common_models() -> None:
    table = shipped_table()
    assert len(table) > 500
    mini = table.get("gpt-4o-mini")
    assert mini is not None and (mini.input, mini.output, mini.cache_read) == (150_000, 600_000, 75_000)
    assert table.get("text-embedding-3-small") is not None


def test_routing_entry_takes_prices_and_limits_from_the_table_unless_overridden() -> None:
    table = PricingTable(trim(LITELLM_SAMPLE))
    spec = resolve_entry({"name": "claude", "provider": "anthropic", "upstream_model": "claude-x"}, table)
    assert (spec.input_usd_micros_per_mtok, spec.output_usd_micros_per_mtok) == (3_000_000, 15_000_000)
    assert (spec.cached_input_usd_micros_per_mtok, spec.cache_write_usd_micros_per_mtok) == (
        300_000,
        3_750_000,
    )
    assert spec.max_output_tokens == 8192
    # 1000 prompt tokens of which 200 cached and 100 written, 10 completion tokens:
    # 700*3 + 200*0.3 + 100*3.75 + 10*15 = 2100 + 60 + 375 + 150 = 2685 micro-dollars
    assert spec.cost_usd_micros(1000, 10, 200, 100) == 2685
    cheap = resolve_entry(
        {
            "name": "c2",
            "provider": "anthropic",
            "upstream_model": "claude-x",
            "output_usd_micros_per_mtok": 1,
        },
        table,
    )
    assert cheap.output_usd_micros_per_mtok == 1
    gem = resolve_entry({"name": "g", "provider": "gemini", "upstream_model": "gemini-x"}, table)
    assert gem.input_usd_micros_per_mtok == 100_000


def test_unpriced_model_without_prices_is_refused() -> None:
    with pytest.raises(ValueError, match="not in the pricing table"):
        resolve_entry(
            {"name": "x", "provider": "openai_compatible", "upstream_model": "local"}, PricingTable({})
        )


def test_routing_file_loads_and_checks_fallbacks(tmp_path: Path) -> None:
    good = tmp_path / "models.json"
    good.write_text(
        json.dumps(
            [
                {"name": "a", "provider": "openai", "upstream_model": "gpt-4o-mini", "fallbacks": ["b"]},
                {"name": "b", "provider": "azure", "upstream_model": "dep", "pricing_model": "gpt-4o-mini",
                 "base_url": "https://x.openai.azure.com", "api_version": "2024-10-21"},
            ]
        )
    )  # fmt: skip
    table = ModelTable.load(good)
    a = table.get("a")
    assert a is not None and a.fallbacks == ("b",) and a.input_usd_micros_per_mtok == 150_000
    assert table.get("mock-gpt") is not None  # built-ins stay
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            [{"name": "a", "provider": "openai", "upstream_model": "gpt-4o-mini", "fallbacks": ["zz"]}]
        )
    )
    with pytest.raises(ValueError, match="fallback"):
        ModelTable.load(bad)
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps([{"name": "a", "provider": "opnai", "upstream_model": "gpt-4o-mini"}]))
    with pytest.raises(ValueError, match="bad model entry"):
        ModelTable.load(typo)
