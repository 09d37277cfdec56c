"""Relaying an admitted stream to the client, and settling it however it ends."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

from lt_gateway.domain.call import Call
from lt_gateway.domain.stream import DONE, StreamAccount, sse
from lt_gateway.domain.usage import StreamChunk, Usage
from lt_gateway.usecases.completion.ledger import UsageLedger
from lt_gateway.usecases.completion.upstream import upstream_error

Release = Callable[[Call, Usage], Awaitable[None]]


async def relay(
    call: Call, chunks: AsyncIterator[StreamChunk], first: StreamChunk, ledger: UsageLedger, release: Release
) -> AsyncGenerator[bytes, None]:
    """Forward chunks as they arrive; the last one carries usage and cost. The reservation's unused part is
    released before that last event leaves; settles exactly once."""
    account = StreamAccount(call)
    status, http_status, error_code = "ok", 200, None
    released = False
    # Journalled until settled: a gateway killed mid-stream leaves what was relayed for the next one to charge.
    journal = ledger.stream_opened(call, account.settled())
    try:
        chunk: StreamChunk | None = first
        while chunk is not None:
            event = account.feed(chunk)
            ledger.stream_progress(journal, account.settled())
            if event is not None:
                if account.sent_final and not released:
                    released = True
                    await release(call, account.settled())
                yield event
            chunk = await anext(chunks, None)
        final = account.close(first)
        if not released:
            released = True
            await release(call, account.settled())
        if final is not None:
            yield final
        yield DONE
    except BaseException as exc:
        if isinstance(exc, Exception):
            err = upstream_error(exc, call, call.spec)
            status, http_status, error_code = "error", err.status, err.code
            yield sse(err.body())
        else:
            # Cancelled (client went away) or closed: charge what was generated, never free.
            status, http_status, error_code = "error", 499, "client_disconnected"
            raise
    finally:
        ledger.settle(call, account.settled(), status, http_status, error_code)
        ledger.stream_closed(journal)
        # Closing the provider's generator closes its upstream connection: generation stops there too.
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
