"""Generate the Grafana dashboards in deploy/grafana/dashboards/ with Grafana's foundation SDK.

    python scripts/gen_dashboards.py           # print the dashboards' file names
    python scripts/gen_dashboards.py --write   # rewrite deploy/grafana/dashboards/*.json
    python scripts/gen_dashboards.py --check   # exit 1 when a committed dashboard differs from this script

The dashboards are code: edit this file, not the JSON (Grafana provisions them read-only). Every panel reads
metrics the services really export (docs/observability.md#families) or the recording rules of
deploy/prometheus/rules.yml. Panels that count failures (5xx, provider errors, denials, dead letters,
failed steps or deliveries, firing alerts) read 0 on a healthy stack rather than "No data": either their series
are created at 0 by the services, or the query ends in `or vector(0)` / adds the healthy series times 0.
tests/e2e/test_observe.py evaluates every expression against a Prometheus scraping a live stack.

Grafana variables used in expressions: `$__rate_interval`, `$__range` (Grafana's own) and `$service`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import BigValueGraphMode, LegendDisplayMode, LegendPlacement
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DashboardLinkType,
    DataSourceRef,
    VariableRefresh,
)

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "deploy" / "grafana" / "dashboards"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="prometheus")

OPS = 'route!~"/metrics|/health|/ready"'
LLM = "/v1/chat/completions|/v1/completions|/v1/embeddings"
RATE = "$__rate_interval"
FIVE_XX = ',status=~"5.."'
FOUR_XX = ',status=~"4.."'


def _requests(selector: str = "") -> str:
    return f'lt_http_requests_total{{service=~"$service",{OPS}{selector}}}'


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = "__auto"


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    unit: str = "short"
    description: str = ""
    kind: str = "timeseries"  # or "stat"
    width: int = 8


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Dashboard:
    uid: str
    file: str
    title: str
    description: str
    rows: tuple[Row, ...]
    tags: tuple[str, ...] = field(default=("leaky-tokens",))
    service_variable: bool = False


def q(expr: str, legend: str = "__auto") -> Query:
    return Query(" ".join(expr.split()), legend)


def quantiles(metric: str, by: str, window: str = RATE, selector: str = "") -> tuple[Query, ...]:
    """p50 and p99 of a histogram, per `by` (comma-separated labels, may be empty)."""
    group = f"{by}, le" if by else "le"
    legend = " ".join(f"{{{{{label.strip()}}}}}" for label in by.split(",") if label.strip())
    return tuple(
        q(
            f"histogram_quantile({p}, sum by ({group}) (rate({metric}_bucket{{{selector}}}[{window}])))",
            f"p{int(p * 100)} {legend}".strip(),
        )
        for p in (0.5, 0.99)
    )


def _five_xx_ratio(by: str) -> str:
    """5xx share per `by`: 0 (not "No data") where a group served requests without a 5xx."""
    errors = f"sum by ({by}) (rate({_requests(FIVE_XX)}[{RATE}]))"
    every = f"sum by ({by}) (rate({_requests()}[{RATE}]))"
    return f"({errors} or {every} * 0) / clamp_min({every}, 1e-9)"


OVERVIEW = Dashboard(
    uid="lt-overview",
    file="leaky-tokens-overview.json",
    title="Leaky Tokens overview",
    description="SLOs (availability 99.9% without 5xx, latency 99% within 1 s), traffic, spend, firing alerts.",
    service_variable=True,
    rows=(
        Row(
            "Service level objectives",
            (
                Panel(
                    "Availability in range (SLO 99.9%)",
                    (
                        q(
                            f"1 - (sum(increase({_requests(FIVE_XX)}[$__range])) or vector(0))"
                            f" / clamp_min(sum(increase({_requests()}[$__range])), 1e-9)"
                        ),
                    ),
                    unit="percentunit",
                    kind="stat",
                    width=6,
                    description="Share of requests (ops routes excluded) answered without a 5xx.",
                ),
                Panel(
                    "Within 1 s in range (SLO 99%)",
                    (
                        q(
                            f'1 - (sum(increase(lt_http_request_duration_seconds_count{{service=~"$service",route!~"/metrics|/health|/ready|{LLM}"}}[$__range]))'
                            f' - sum(increase(lt_http_request_duration_seconds_bucket{{service=~"$service",route!~"/metrics|/health|/ready|{LLM}",le=~"1|1\\\\.0"}}[$__range])))'
                            f' / clamp_min(sum(increase(lt_http_request_duration_seconds_count{{service=~"$service",route!~"/metrics|/health|/ready|{LLM}"}}[$__range])), 1e-9)'
                        ),
                    ),
                    unit="percentunit",
                    kind="stat",
                    width=6,
                    description="Share of requests within 1 s; the LLM routes are the provider's time and excluded.",
                ),
                Panel(
                    "Spend in range (USD)",
                    (q("sum(increase(lt_gateway_cost_usd_total[$__range])) or vector(0)"),),
                    unit="currencyUSD",
                    kind="stat",
                    width=6,
                ),
                Panel(
                    "Alerts firing",
                    (q('count(ALERTS{alertstate="firing"}) or vector(0)'),),
                    kind="stat",
                    width=6,
                    description="Prometheus alerts of deploy/prometheus/rules.yml now firing.",
                ),
                Panel(
                    "Error budget burn rate (x sustainable; 14.4 pages)",
                    (
                        q("lt:http_5xx_ratio:rate1h / 0.001", "1h {{service}}"),
                        q("lt:http_5xx_ratio:rate5m / 0.001", "5m {{service}}"),
                    ),
                    width=12,
                    description="Recording rules of rules.yml: the 5xx ratio over the budget's 0.1%.",
                ),
                Panel(
                    "5xx ratio per service",
                    (q(_five_xx_ratio("service"), "{{service}}"),),
                    unit="percentunit",
                    width=12,
                ),
            ),
        ),
        Row(
            "Traffic and latency",
            (
                Panel(
                    "Requests / s per service",
                    (q(f"sum by (service) (rate({_requests()}[{RATE}]))", "{{service}}"),),
                    unit="reqps",
                ),
                Panel(
                    "p99 latency per service",
                    quantiles(
                        "lt_http_request_duration_seconds",
                        "service",
                        selector='service=~"$service",route!~"/metrics|/health|/ready"',
                    )[1:],
                    unit="s",
                ),
                Panel(
                    "Spend per hour by model (USD)",
                    (q(f"sum by (model) (rate(lt_gateway_cost_usd_total[{RATE}])) * 3600", "{{model}}"),),
                    unit="currencyUSD",
                ),
                Panel(
                    "Scrape targets up",
                    (q('sum by (app) (up{job="leaky-tokens"})', "{{app}}"),),
                    width=12,
                ),
                Panel(
                    "4xx responses per service and status",
                    (
                        q(
                            f"sum by (service, status) (rate({_requests(FOUR_XX)}[{RATE}])) or vector(0)",
                            "{{service}} {{status}}",
                        ),
                    ),
                    unit="reqps",
                    width=12,
                ),
            ),
        ),
    ),
)

GATEWAY = Dashboard(
    uid="lt-gateway",
    file="leaky-tokens-gateway.json",
    title="Leaky Tokens gateway and providers",
    description="The gateway's routes and every provider call: rate, latency, time to first token, errors, tokens.",
    rows=(
        Row(
            "Gateway",
            (
                Panel(
                    "Requests / s per route",
                    (
                        q(
                            f'sum by (method, route) (rate(lt_http_requests_total{{service="gateway",{OPS}}}[{RATE}]))',
                            "{{method}} {{route}}",
                        ),
                    ),
                    unit="reqps",
                ),
                Panel(
                    "5xx / s per route",
                    (
                        q(
                            f'sum by (route, status) (rate(lt_http_requests_total{{service="gateway",{OPS},status=~"5.."}}[{RATE}])) or vector(0)',
                            "{{route}} {{status}}",
                        ),
                    ),
                    unit="reqps",
                ),
                Panel(
                    "p50 / p99 latency per route",
                    quantiles(
                        "lt_http_request_duration_seconds", "route", selector=f'service="gateway",{OPS}'
                    ),
                    unit="s",
                ),
                Panel(
                    "Usage events waiting for the broker",
                    (
                        q("sum(lt_gateway_usage_events_pending)", "in memory"),
                        q("sum(lt_gateway_usage_events_spooled)", "spooled"),
                        q(
                            "sum(increase(lt_gateway_usage_events_dropped_total[$__rate_interval]))",
                            "dropped",
                        ),
                    ),
                    width=12,
                    description="Dropped events are usage never charged (LtUsageEventsDropped pages).",
                ),
                Panel(
                    "Tokens / s by model and kind",
                    (
                        q(
                            f"sum by (model, kind) (rate(lt_gateway_tokens_total[{RATE}]))",
                            "{{model}} {{kind}}",
                        ),
                    ),
                    width=12,
                ),
            ),
        ),
        Row(
            "Providers",
            (
                Panel(
                    "Provider calls / s by provider, model and status",
                    (
                        q(
                            f"sum by (provider, model, status) (rate(lt_gateway_provider_request_duration_seconds_count[{RATE}]))",
                            "{{provider}} {{model}} {{status}}",
                        ),
                    ),
                    unit="reqps",
                ),
                Panel(
                    "Provider latency p50 / p99",
                    quantiles("lt_gateway_provider_request_duration_seconds", "provider, model"),
                    unit="s",
                    description="To the whole answer, or to the first chunk of a stream.",
                ),
                Panel(
                    "Time to first token p50 / p99",
                    quantiles("lt_gateway_provider_time_to_first_token_seconds", "provider, model"),
                    unit="s",
                ),
                Panel(
                    "Provider errors / s by status",
                    (
                        q(
                            f"sum by (provider, model, status) (rate(lt_gateway_provider_errors_total[{RATE}]))",
                            "{{provider}} {{model}} {{status}}",
                        ),
                    ),
                    unit="reqps",
                    width=12,
                    description="Series exist at 0 for the usual statuses of every deployment.",
                ),
                Panel(
                    "Provider error ratio (alert above 5%)",
                    (
                        q(
                            f"sum by (provider, model) (rate(lt_gateway_provider_errors_total[{RATE}]))"
                            f" / clamp_min(sum by (provider, model) (rate(lt_gateway_provider_request_duration_seconds_count[{RATE}])), 1e-9)",
                            "{{provider}} {{model}}",
                        ),
                    ),
                    unit="percentunit",
                    width=12,
                ),
            ),
        ),
    ),
)

QUOTA = Dashboard(
    uid="lt-quota",
    file="leaky-tokens-quota.json",
    title="Leaky Tokens quota and money",
    description="Admissions and denials, reservations, settlement lag, tokens and spend by quota source.",
    rows=(
        Row(
            "Admission",
            (
                Panel(
                    "Admissions / s by decision",
                    (
                        q(
                            f"sum by (decision) (rate(lt_quota_admissions_total[{RATE}]))",
                            "{{decision}}",
                        ),
                    ),
                    unit="reqps",
                ),
                Panel(
                    "Denials / s by decision and cap",
                    (
                        q(
                            f'sum by (decision, cap) (rate(lt_quota_admissions_total{{decision!="admitted"}}[{RATE}])) or vector(0)',
                            "{{decision}} {{cap}}",
                        ),
                    ),
                    unit="reqps",
                ),
                Panel(
                    "Quota p99 latency per route",
                    quantiles("lt_http_request_duration_seconds", "route", selector=f'service="quota",{OPS}')[
                        1:
                    ],
                    unit="s",
                ),
            ),
        ),
        Row(
            "Reservations and settlement",
            (
                Panel(
                    "Reservations open",
                    (q("max(lt_quota_reservations_open)", "open"),),
                    description="Sampled by each sweep; every quota instance reads the same Redis.",
                ),
                Panel(
                    "Reservations / s: released, settled, expired and charged",
                    (
                        q(f"sum(rate(lt_quota_reservations_released_total[{RATE}]))", "released"),
                        q(f"sum(rate(lt_quota_reservations_settled_total[{RATE}]))", "settled"),
                        q(
                            f"sum(rate(lt_quota_reservations_expired_charged_total[{RATE}]))",
                            "expired and charged",
                        ),
                    ),
                    description="Expired and charged: a usage event lost or very late (alert).",
                ),
                Panel(
                    "Settlement lag p50 / p99",
                    quantiles("lt_quota_settlement_lag_seconds", ""),
                    unit="s",
                    description="From the usage event at the gateway to its charge committed (alert: p99 > 60 s).",
                ),
            ),
        ),
        Row(
            "Money",
            (
                Panel(
                    "Spend per hour by model and provider (USD)",
                    (
                        q(
                            f"sum by (model, provider) (rate(lt_gateway_cost_usd_total[{RATE}])) * 3600",
                            "{{model}} {{provider}}",
                        ),
                    ),
                    unit="currencyUSD",
                ),
                Panel(
                    "Spend in range by quota source (USD)",
                    (
                        q(
                            "sum by (quota_source) (increase(lt_gateway_cost_usd_total[$__range]))",
                            "{{quota_source}}",
                        ),
                    ),
                    unit="currencyUSD",
                ),
                Panel(
                    "Tokens / min by quota source",
                    (
                        q(
                            f"sum by (quota_source) (rate(lt_gateway_tokens_total[{RATE}])) * 60",
                            "{{quota_source}}",
                        ),
                    ),
                ),
            ),
        ),
    ),
)

SAGA = Dashboard(
    uid="lt-saga",
    file="leaky-tokens-saga.json",
    title="Leaky Tokens purchase saga",
    description="Purchases by status and step, stuck purchases, durations.",
    rows=(
        Row(
            "Purchases",
            (
                Panel(
                    "Purchases finished in range by status",
                    (q("sum by (status) (increase(lt_saga_purchases_total[$__range]))", "{{status}}"),),
                    kind="stat",
                ),
                Panel(
                    "Unfinished purchases (alert: none at zero for 30 min)",
                    (
                        q("lt:saga_purchases_unfinished", "unfinished"),
                        q(
                            'max by (status) (lt_saga_purchases_by_status{status!~"COMPLETED|COMPENSATED|FAILED"})',
                            "{{status}}",
                        ),
                    ),
                ),
                Panel(
                    "Purchase duration p50 / p99 by status",
                    quantiles("lt_saga_purchase_duration_seconds", "status"),
                    unit="s",
                ),
            ),
        ),
        Row(
            "Steps",
            (
                Panel(
                    "Steps / s by step and status",
                    (
                        q(
                            f"sum by (step, status) (rate(lt_saga_steps_total[{RATE}]))",
                            "{{step}} {{status}}",
                        ),
                    ),
                    width=12,
                ),
                Panel(
                    "Failed, timed out and resent steps / s",
                    (
                        q(
                            f'sum by (step, status) (rate(lt_saga_steps_total{{status=~"failed|timed_out|resent"}}[{RATE}])) or vector(0)',
                            "{{step}} {{status}}",
                        ),
                    ),
                    width=12,
                ),
            ),
        ),
    ),
)

ANALYTICS = Dashboard(
    uid="lt-analytics",
    file="leaky-tokens-analytics.json",
    title="Leaky Tokens analytics and alerts",
    description="The analytics worker's batches and detections, notifier deliveries, Prometheus alerts firing.",
    rows=(
        Row(
            "Analytics worker",
            (
                Panel(
                    "Usage messages / s by outcome",
                    (q(f"sum by (outcome) (rate(lt_analytics_events_total[{RATE}]))", "{{outcome}}"),),
                ),
                Panel(
                    "Batch size p50 / p99 (events)",
                    quantiles("lt_analytics_batch_size_events", ""),
                ),
                Panel(
                    "Analytics lag p50 / p99",
                    quantiles("lt_analytics_lag_seconds", ""),
                    unit="s",
                ),
                Panel(
                    "Detections in range by kind",
                    (q("sum by (kind) (increase(lt_analytics_detections_total[$__range]))", "{{kind}}"),),
                    kind="stat",
                    width=24,
                ),
            ),
        ),
        Row(
            "Notifications and alerts",
            (
                Panel(
                    "Deliveries / s by channel and status",
                    (
                        q(
                            f"sum by (channel, status) (rate(lt_notifier_deliveries_total[{RATE}]))",
                            "{{channel}} {{status}}",
                        ),
                    ),
                ),
                Panel(
                    "Failed deliveries / s (retrying, dead)",
                    (
                        q(
                            f'sum by (channel, status) (rate(lt_notifier_deliveries_total{{status!="delivered"}}[{RATE}])) or vector(0)',
                            "{{channel}} {{status}}",
                        ),
                    ),
                ),
                Panel(
                    "Prometheus alerts firing",
                    (q('count by (alertname) (ALERTS{alertstate="firing"}) or vector(0)', "{{alertname}}"),),
                ),
            ),
        ),
    ),
)

INFRA = Dashboard(
    uid="lt-infra",
    file="leaky-tokens-infrastructure.json",
    title="Leaky Tokens infrastructure",
    description="Kafka consumer lag, outbox backlog and age, dead letters, connection pools, processes.",
    rows=(
        Row(
            "Kafka and outbox",
            (
                Panel(
                    "Consumer lag by group and topic (messages)",
                    (
                        q(
                            "max by (group, topic) (lt_kafka_consumer_lag_messages)",
                            "{{group}} {{topic}}",
                        ),
                    ),
                    description="Sampled on each fetch: a stopped consumer stops updating it (read with `up`).",
                ),
                Panel(
                    "Outbox backlog by service (messages)",
                    (q("max by (app) (lt_outbox_backlog_messages)", "{{app}}"),),
                ),
                Panel(
                    "Oldest unpublished outbox row by service",
                    (q("max by (app) (lt_outbox_oldest_age_seconds)", "{{app}}"),),
                    unit="s",
                ),
                Panel(
                    "Dead letters in range by topic",
                    (
                        q(
                            "sum by (app, topic) (increase(lt_kafka_dead_letters_total[$__range]))",
                            "{{app}} {{topic}}",
                        ),
                    ),
                    width=24,
                    description="Series exist at 0 for every consumed topic.",
                ),
            ),
        ),
        Row(
            "Pools and processes",
            (
                Panel(
                    "PostgreSQL connections in use by service and pool",
                    (
                        q(
                            'sum by (app, pool) (lt_db_pool_connections{state="in_use"})',
                            "{{app}} {{pool}}",
                        ),
                    ),
                ),
                Panel(
                    "Pool utilisation (open / max)",
                    (
                        q(
                            "sum by (app, pool) (lt_db_pool_connections)"
                            " / sum by (app, pool) (lt_db_pool_max_connections)",
                            "{{app}} {{pool}}",
                        ),
                    ),
                    unit="percentunit",
                ),
                Panel(
                    "Scrape targets up",
                    (q('up{job="leaky-tokens"}', "{{app}}"),),
                ),
                Panel(
                    "CPU per process (cores)",
                    (
                        q(
                            f'sum by (app) (rate(process_cpu_seconds_total{{job="leaky-tokens"}}[{RATE}]))',
                            "{{app}}",
                        ),
                    ),
                    width=12,
                ),
                Panel(
                    "Resident memory per process",
                    (q('sum by (app) (process_resident_memory_bytes{job="leaky-tokens"})', "{{app}}"),),
                    unit="bytes",
                    width=12,
                ),
            ),
        ),
    ),
)

DASHBOARDS = (OVERVIEW, GATEWAY, QUOTA, SAGA, ANALYTICS, INFRA)


def _panel(panel: Panel) -> timeseries.Panel | stat.Panel:
    builder: timeseries.Panel | stat.Panel = (
        stat.Panel()
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .graph_mode(BigValueGraphMode.AREA)
        if panel.kind == "stat"
        else timeseries.Panel()
        .line_width(1)
        .fill_opacity(10)
        .legend(
            cb.VizLegendOptions()
            .show_legend(True)
            .display_mode(LegendDisplayMode.LIST)
            .placement(LegendPlacement.BOTTOM)
        )
    )
    builder = builder.title(panel.title).unit(panel.unit).datasource(DATASOURCE).span(panel.width).height(8)
    if panel.kind == "stat":
        builder = builder.height(5)
    if panel.description:
        builder = builder.description(panel.description)
    for index, query in enumerate(panel.queries):
        builder = builder.with_target(
            prometheus.Dataquery()
            .expr(query.expr)
            .legend_format(query.legend)
            .ref_id(chr(ord("A") + index))
            .datasource(DATASOURCE)
        )
    return builder


def build(spec: Dashboard) -> dict[str, object]:
    """The dashboard's JSON model, as Grafana stores it."""
    builder = (
        db.Dashboard(spec.title)
        .uid(spec.uid)
        .description(spec.description)
        .tags(list(spec.tags))
        .readonly()
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .link(
            db.DashboardLink("Leaky Tokens")
            .type(DashboardLinkType.DASHBOARDS)
            .tags(["leaky-tokens"])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    )
    if spec.service_variable:
        builder = builder.with_variable(
            db.QueryVariable("service")
            .label("service")
            .query("label_values(lt_http_requests_total, service)")
            .datasource(DATASOURCE)
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        )
    for row in spec.rows:
        builder = builder.with_row(db.Row(row.title))
        for panel in row.panels:
            builder = builder.with_panel(_panel(panel))
    model: dict[str, object] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    for index, entry in enumerate(_all_panels(model), start=1):
        entry["id"] = index
    return model


def _all_panels(model: dict[str, object]) -> list[dict[str, object]]:
    panels = model.get("panels")
    assert isinstance(panels, list)
    return panels


def render(spec: Dashboard) -> str:
    return json.dumps(build(spec), indent=2, sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help="rewrite the JSON files")
    action.add_argument("--check", action="store_true", help="exit 1 when a committed file differs")
    args = parser.parse_args()
    expected = {spec.file: render(spec) for spec in DASHBOARDS}
    if args.write:
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        for stale in set(p.name for p in OUT_DIR.glob("*.json")) - set(expected):
            (OUT_DIR / stale).unlink()
        for name, text in expected.items():
            (OUT_DIR / name).write_text(text)
        return 0
    if args.check:
        found = {p.name: p.read_text() for p in OUT_DIR.glob("*.json")}
        drift = sorted(n for n in expected.keys() | found.keys() if expected.get(n) != found.get(n))
        if drift:
            sys.stderr.write(
                f"dashboards differ from scripts/gen_dashboards.py: {drift}; run it with --write\n"
            )
            return 1
        return 0
    sys.stdout.write("\n".join(sorted(expected)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
