"""cancel_and_wait: a task that swallows its cancellation still ends; its own errors are not hidden."""

import asyncio
import contextlib

import pytest

from leaky_common.tasks import cancel_and_wait


async def test_a_task_that_swallows_the_cancel_is_cancelled_again_until_it_ends() -> None:
    started = asyncio.Event()

    async def stubborn() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # what Python 3.11's wait_for can do
            started.set()
            await asyncio.sleep(3600)
        await asyncio.sleep(3600)  # on into the next sleep, as a service loop does

    task = asyncio.create_task(stubborn(), name="stubborn")
    await started.wait()
    await asyncio.wait_for(cancel_and_wait(task, grace_s=0.05), timeout=10)
    assert task.cancelled()


async def test_an_ordinary_task_ends_at_the_first_cancel_and_a_finished_one_is_left_alone() -> None:
    task = asyncio.create_task(asyncio.sleep(3600))
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert task.cancelled()
    done = asyncio.create_task(asyncio.sleep(0, result=1))
    await done
    await cancel_and_wait(done)  # nothing to cancel
    await cancel_and_wait(None)


async def test_the_tasks_own_error_is_raised() -> None:
    async def broken() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(broken())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="boom"):
        await cancel_and_wait(task)
