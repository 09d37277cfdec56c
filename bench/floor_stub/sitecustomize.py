"""Bench only (`bench/floor.py`): a gateway whose admission does not go to quota. Loaded as `sitecustomize` by a
gateway started with this directory on PYTHONPATH, and active only with `LT_BENCH_STUB_ADMISSION` set:

- `free`: admission costs nothing;
- `redis`: admission is one Redis round trip from the gateway: the real admission script, its keys and arguments
  replayed from a real admission (`LT_BENCH_CAPTURE`, a JSON file `{"argv": [...], "reservation_id": ...}`),
  with the request's own reservation id, on `LT_BENCH_REDIS_URL`.

Either way the first admission goes to quota and its answer, with the request's reservation id, answers every
later one; releases are dropped. Everything else on the path (parsing, tokenizing, the journal, the upstream
call, the usage event, metrics, the log line) is the shipped code. This measures what the quota hop costs; it
is not a way to run the gateway.
"""

from __future__ import annotations

import json
import os
from typing import Any

_MODE = os.environ.get("LT_BENCH_STUB_ADMISSION", "")

if _MODE in ("free", "redis"):
    from redis.asyncio import Redis

    from leaky_common.contracts import AdmitResponse
    from lt_gateway.adapters import quota_client

    _real_admit = quota_client.QuotaClient.admit
    _state: dict[str, Any] = {}
    if _MODE == "redis":  # (written before this gateway starts)
        with open(os.environ["LT_BENCH_CAPTURE"], encoding="utf-8") as f:
            _state["capture"] = json.load(f)

    async def _admit(self: quota_client.QuotaClient, request: Any) -> Any:
        template = _state.get("answer")
        if template is None:
            answer = await _real_admit(self, request)
            if isinstance(answer, AdmitResponse):
                _state["answer"] = answer.model_copy(update={"release_wait": False})
            return answer
        if _MODE == "redis":
            if "redis" not in _state:
                _state["redis"] = Redis.from_url(os.environ["LT_BENCH_REDIS_URL"], decode_responses=True)
            capture = _state["capture"]
            old = capture["reservation_id"]
            argv = [part.replace(old, request.reservation_id) for part in capture["argv"]]
            pipe = _state["redis"].pipeline(transaction=False)  # as quota sends it (ScriptPipeline)
            pipe.execute_command(*argv)
            (reply,) = await pipe.execute(raise_on_error=False)
            if not isinstance(reply, list):
                raise RuntimeError(f"the replayed admission failed: {reply!r}")
        return template.model_copy(update={"reservation_id": request.reservation_id})

    def _no_release(self: quota_client.QuotaClient, *args: Any, **kwargs: Any) -> None:
        return None

    quota_client.QuotaClient.admit = _admit  # type: ignore[method-assign]
    quota_client.QuotaClient.release_later = _no_release  # type: ignore[method-assign]
