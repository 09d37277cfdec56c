"""What the Redis, PostgreSQL and HTTP client spans cost the hot path, with every trace sampled.

    python bench/client_spans.py [--rounds 3] [--requests 2000] [--sequential 500]
                                 [--modes on,default,no-client-spans,off]

Runs `bench/hotpath.py --runs 1 --no-litellm --no-install --no-twin` once per mode per round, the modes
interleaved (on, default, no-client-spans, off, on, ...) so machine noise falls on all alike, each with a stack of its
own:
- on: every trace exported (`LT_TRACE_SAMPLE_RATIO=1.0`) to a fake OTLP collector, client spans in every
  trace (`LT_TRACE_CLIENT_SPAN_RATIO=1.0`);
- default: the same with the default `LT_TRACE_CLIENT_SPAN_RATIO`;
- no-client-spans: the same with `LT_TRACE_CLIENT_SPANS=false`;
- off: no `LT_OTLP_ENDPOINT` (no tracing at all), for reference.

Prints each run and the medians: CPU milliseconds per governed request summed over gateway, quota, Redis and
the broker (and by process), p50 at c=1, req/s at c=32, and the load average when each run ended. The cost of
the client spans is on (or default) minus no-client-spans, as a share of no-client-spans (the issue's budget:
under 5%).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_run(mode: str, args: argparse.Namespace) -> dict[str, object]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    cmd = [
        sys.executable, str(ROOT / "bench" / "hotpath.py"), "--runs", "1", "--no-litellm", "--no-portkey", "--no-install",
        "--no-twin", "--trace", mode, "--requests", str(args.requests), "--sequential", str(args.sequential),
        "--json", str(out),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    figures: dict[str, object] = json.loads(out.read_text())
    out.unlink()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--sequential", type=int, default=500)
    parser.add_argument("--modes", default="on,default,no-client-spans,off")
    args = parser.parse_args()
    modes = args.modes.split(",")
    runs: dict[str, list[dict[str, object]]] = {m: [] for m in modes}
    print(f"load average at start: {os.getloadavg()}")
    for i in range(args.rounds):
        for mode in modes:
            figures = one_run(mode, args)
            runs[mode].append(figures)
            breakdown = figures["breakdown"]
            assert isinstance(breakdown, dict)
            print(
                f"round {i + 1} {mode:16} CPU {figures['cpu_ms']:.3f} ms/req "
                f"({', '.join(f'{k} {v:.3f}' for k, v in breakdown.items())}), p50 {figures['p50']:.2f} ms, "
                f"{figures['rps']:.0f} req/s, spans {figures['spans']}, load {figures['load']}",
                flush=True,
            )
    print(f"\nmedians of {args.rounds} rounds ({args.requests} requests at c=32 for the CPU figure):")
    medians: dict[str, float] = {}
    for mode in modes:
        cpu = statistics.median(float(str(r["cpu_ms"])) for r in runs[mode])
        medians[mode] = cpu
        by_process: dict[str, float] = {}
        for key in ("gateway", "quota", "redis", "broker"):
            values = [float(r["breakdown"][key]) for r in runs[mode] if key in r["breakdown"]]  # type: ignore[index,operator]
            if values:
                by_process[key] = statistics.median(values)
        p50 = statistics.median(float(str(r["p50"])) for r in runs[mode])
        rps = statistics.median(float(str(r["rps"])) for r in runs[mode])
        print(
            f"  {mode:16} CPU {cpu:.3f} ms/req ({', '.join(f'{k} {v:.3f}' for k, v in by_process.items())}), "
            f"p50 {p50:.2f} ms, {rps:.0f} req/s"
        )
    if "no-client-spans" in medians:
        without = medians["no-client-spans"]
        for mode, what in (("on", "in every trace"), ("default", "at the default client span ratio")):
            if mode in medians:
                on = medians[mode]
                print(
                    f"client spans {what} cost {on - without:+.3f} ms/req = {100 * (on - without) / without:+.1f}% "
                    f"of the hot path's CPU with tracing at ratio 1.0 (budget: under 5%)"
                )
        if "off" in medians:
            off = medians["off"]
            print(
                f"tracing at ratio 1.0 without client spans costs {without - off:+.3f} ms/req over no tracing"
            )
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
