"""HeadWatch: one timer for every stream still waiting for its head."""

from __future__ import annotations

import asyncio

from nbtunnel.connector.head_watch import HeadWatch


async def _wait_for_head(watch: HeadWatch, head: asyncio.Future[str]) -> str:
    task = asyncio.current_task()
    assert task is not None
    watch.arm(task)
    try:
        return await head
    except asyncio.CancelledError:
        if watch.expired(task):
            return "timeout"
        raise
    finally:
        watch.disarm(task)


async def test_an_overdue_head_is_a_timeout_and_an_arrived_one_is_not() -> None:
    loop = asyncio.get_running_loop()
    watch = HeadWatch(0.01)
    arrived: asyncio.Future[str] = loop.create_future()
    never: asyncio.Future[str] = loop.create_future()
    first = asyncio.create_task(_wait_for_head(watch, arrived))
    late = asyncio.create_task(_wait_for_head(watch, never))
    await asyncio.sleep(0)  # both armed
    assert watch.waiting == 2
    arrived.set_result("head")
    assert await first == "head"
    assert await late == "timeout"  # the one timer fired for the stream still waiting
    assert watch.waiting == 0
    assert late.cancelling() == 0  # the watch's cancellation was consumed


async def test_someone_elses_cancellation_is_not_a_timeout() -> None:
    watch = HeadWatch(3600)
    never: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(_wait_for_head(watch, never))
    await asyncio.sleep(0)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("a foreign cancellation was swallowed")
    assert watch.waiting == 0
    watch.close()


async def test_later_streams_rearm_the_timer_for_their_own_deadline() -> None:
    """Streams armed while the timer waits for an earlier deadline still expire (the timer
    re-arms for the next one), and those that got their head in between are left alone."""
    loop = asyncio.get_running_loop()
    watch = HeadWatch(0.02)
    heads: list[asyncio.Future[str]] = [loop.create_future() for _ in range(4)]
    tasks = []
    for i, head in enumerate(heads):
        tasks.append(asyncio.create_task(_wait_for_head(watch, head)))
        await asyncio.sleep(0)  # armed now
        if i == 1:
            head.set_result("head")
        await asyncio.sleep(0.005)  # spreads the deadlines; the outcome does not depend on it
    assert [await t for t in tasks] == ["timeout", "head", "timeout", "timeout"]
