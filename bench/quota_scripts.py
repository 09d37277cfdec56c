"""Redis time of quota's hot-path scripts (admission, then its release): this tree's against another revision's.

    python bench/quota_scripts.py [--against HEAD] [--admissions 5000] [--rounds 6]

Starts its own Redis (memory only, free port) and loads `admit.lua` and `release.lua` of the working tree
("new") and of `--against` ("old", read with `git show`). Each round runs `--admissions` admissions, each
followed by its release at a smaller actual usage, first with one pair of scripts, then with the other (the
order alternates per round), on keys of their own: two token counters (an org pool that must fit and a
personal pool the balancer picks), four buckets, one session. Redis's own time (INFO commandstats: EVALSHA,
which includes the commands the scripts call) per admission + release is what the round reports; the medians
over the rounds, and the replies, checked equal, close the run. No network figures: Redis time only, which is
what each admission waits for on Redis and what Redis spends per request.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from leaky_devinfra.infra import start_redis

ROOT = Path(__file__).resolve().parents[1]
LUA = Path("services/quota/src/lt_quota/adapters/lua")
PERIOD_MS = 60_000


def scripts(revision: str | None) -> tuple[str, str]:
    """admit.lua and release.lua of `revision` (None: the working tree)."""
    if revision is None:
        return (ROOT / LUA / "admit.lua").read_text(), (ROOT / LUA / "release.lua").read_text()
    show = [subprocess.run(["git", "show", f"{revision}:{LUA / name}"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout for name in ("admit.lua", "release.lua")]  # fmt: skip
    return show[0], show[1]


def admit_call(p: str, i: int, now_ms: int) -> tuple[list[str], list[Any]]:
    """Keys and arguments of admission `i` under prefix `p` (the layout `RedisState._admit_call` makes)."""
    rid = f"{i:08d}res"
    keys = [
        f"{p}freeze:user:u1", f"{p}freeze:key:k1", f"{p}freeze:session:s1",
        f"{p}bucket:key:k1:req", f"{p}bucket:key:k1:tok", f"{p}bucket:user:u1:req", f"{p}bucket:user:u1:tok",
        f"{p}res:{rid}", f"{p}res:by_expiry", f"{p}pool:org", f"{p}pool:personal",
    ]  # fmt: skip
    args: list[Any] = [
        now_ms, 120, 256, 1, 150, 600,  # now, prompt, max and min output, prices per million
        10**9, 10**12, 10**9, 10**12, PERIOD_MS, "leaky_bucket", rid, now_ms + 90_000, "1", "u1", f"req-{i}",
        256, 2, 1, 1.0, 0, "personal",  # bucket output, counters, sources, burst, buckets lost at, the source
        "org", "t", 0, 0, "org|2026-12|org", "personal", "t", 1, 0, "personal|2026-12|personal",
    ]  # fmt: skip
    return keys, args


async def run_pair(
    redis: Redis, shas: tuple[str, str], p: str, start: int, n: int
) -> tuple[float, list[Any]]:
    """`n` admissions and releases; Redis microseconds per pair, and the replies."""
    await redis.config_resetstat()
    replies: list[Any] = []
    for i in range(start, start + n):
        keys, args = admit_call(p, i, 1_000_000 + i)
        admitted = await redis.evalsha(shas[0], len(keys), *keys, *args)
        released = await redis.evalsha(shas[1], 1, keys[7], 100, 1)
        # (key names carry the side's prefix: compared without it)
        replies.append(
            str((admitted[:11], sorted(_pairs(admitted[11])), sorted(_pairs(released)))).replace(p, "")
        )
    stats = await redis.info("commandstats")
    return stats["cmdstat_evalsha"]["usec"] / n, replies


def _pairs(flat: list[Any]) -> list[tuple[Any, Any]]:
    return list(zip(flat[::2], flat[1::2], strict=True))


async def main_async(args: argparse.Namespace) -> None:
    server = start_redis()
    try:
        redis = Redis.from_url(server.url, decode_responses=True)
        sides: dict[str, tuple[str, str]] = {}
        for side, revision in (("old", args.against), ("new", None)):
            admit, release = scripts(revision)
            sides[side] = (await redis.script_load(admit), await redis.script_load(release))
            for pool in ("org", "personal"):
                await redis.hset(f"{side}:pool:{pool}", mapping={"limit": 10**15, "used": 0, "reserved": 0})
        print(f"old: {args.against} {sides['old'][0][:8]}/{sides['old'][1][:8]}; "
              f"new: working tree {sides['new'][0][:8]}/{sides['new'][1][:8]}")  # fmt: skip
        figures: dict[str, list[float]] = {"old": [], "new": []}
        for r in range(args.rounds):
            order = ("old", "new") if r % 2 == 0 else ("new", "old")
            seen = {}
            for side in order:
                us, seen[side] = await run_pair(
                    redis, sides[side], f"{side}:", r * args.admissions, args.admissions
                )
                figures[side].append(us)
            diff = (
                next((o, n) for o, n in zip(seen["old"], seen["new"], strict=True) if o != n)
                if seen["old"] != seen["new"]
                else None
            )
            assert diff is None, f"the two revisions answered differently: {diff}"
            print(f"round {r + 1}: Redis us per admission + release: old {figures['old'][-1]:.1f}, "
                  f"new {figures['new'][-1]:.1f}")  # fmt: skip
        old, new = statistics.median(figures["old"]), statistics.median(figures["new"])
        print(
            f"medians: old {old:.1f} us, new {new:.1f} us ({(new - old) / old * 100:+.0f} %); replies equal"
        )
        await redis.aclose()
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="HEAD", help="the revision to compare with (default HEAD)")
    parser.add_argument("--admissions", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=6)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
