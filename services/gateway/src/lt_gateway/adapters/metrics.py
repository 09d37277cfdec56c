"""Gateway-specific Prometheus metrics."""

from prometheus_client import Counter

TOKENS = Counter("lt_gateway_tokens_total", "Tokens through the gateway", ["model", "kind"])
COST_MICROS = Counter("lt_gateway_cost_usd_micros_total", "Cost in micro-dollars", ["model"])
