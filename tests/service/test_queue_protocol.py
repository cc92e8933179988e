"""The task stream's at-least-once protocol, one TaskQueue per consumer, on a real redis-server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis

from harness.redis_server import RedisServer
from service.core.consumer_groups import ensure_all_groups
from service.core.redis_client import create_redis
from service.core.settings import Settings
from service.tasks.task_format import Task
from service.tasks.task_queue import Delivery, Finished, QueueFull, TaskQueue
from tests.support.service_settings import make_settings

QUEUE, GROUP = "shield:ingestion_queue", "lightrag-workers"


@pytest.fixture
async def small_queue(
    redis_server: RedisServer, redis_client: redis.Redis
) -> AsyncIterator[tuple[TaskQueue, Settings]]:
    settings = make_settings(redis_server, stream_maxlen=50, batch_size=200, block_ms=10)
    client = create_redis(settings)
    await ensure_all_groups(client, settings)
    try:
        yield TaskQueue(client, settings), settings
    finally:
        await client.aclose()


def task(index: int) -> Task:
    return Task(job_id="j", chunk_id=f"c{index}", content="x")


def done(deliveries: list[Delivery]) -> Finished:
    return Finished(entry_ids=[delivery.entry_id for delivery in deliveries], events=[])


async def test_enqueue_refuses_at_the_cap_and_writes_nothing(
    small_queue: tuple[TaskQueue, Settings], redis_client: redis.Redis
) -> None:
    queue, _ = small_queue
    for index in range(50):
        await queue.enqueue(task(index))
    with pytest.raises(QueueFull, match="50 unacked tasks, cap 50"):
        await queue.enqueue(task(50))
    assert redis_client.xlen(QUEUE) == 50
    # Acked tasks no longer count: the stream at its cap is trimmed of them first.
    await queue.ack("w", done(await queue.read("w")))
    await queue.enqueue(task(51))
    assert redis_client.xlen(QUEUE) <= 2


async def test_admission_does_not_trust_a_lag_that_a_failover_garbled(
    small_queue: tuple[TaskQueue, Settings], redis_client: redis.Redis
) -> None:
    queue, _ = small_queue
    for index in range(50):
        await queue.enqueue(task(index))
    first = await queue.read("w")
    await queue.ack("w", done(first[:10]))
    # The entries-read a promoted replica has, XREADGROUP never having passed it on
    # (redis/redis#12898): Redis's lag is now the stream's whole history.
    redis_client.execute_command(
        "XGROUP", "SETID", QUEUE, GROUP, first[-1].entry_id, "ENTRIESREAD", 0
    )
    assert redis_client.xinfo_groups(QUEUE)[0]["lag"] == 50
    # 40 still pending: room for 10 more, and not one more.
    for index in range(50, 60):
        await queue.enqueue(task(index))
    with pytest.raises(QueueFull):
        await queue.enqueue(task(60))
    await queue.ack("w", done(first[10:]))
    rest = await queue.read("w")
    await queue.ack("w", done(rest))
    redis_client.execute_command(
        "XGROUP", "SETID", QUEUE, GROUP, rest[-1].entry_id, "ENTRIESREAD", 0
    )
    assert redis_client.xlen(QUEUE) == 50
    # Every task read and acked: nothing is unread, whatever the lag says.
    await queue.enqueue(task(61))


async def test_trimming_keeps_every_task_the_group_has_not_acked(
    small_queue: tuple[TaskQueue, Settings], redis_client: redis.Redis
) -> None:
    queue, _ = small_queue
    for index in range(10):
        await queue.enqueue(task(index))
    held = await queue.read("slow")
    for round_ in range(5):
        for index in range(30):
            await queue.enqueue(task(1000 * (round_ + 1) + index))
        await queue.ack("fast", done(await queue.read("fast")))
    # 160 entries went in, 150 were acked; the 10 the slow consumer holds were never trimmed.
    held_ids = [delivery.entry_id for delivery in held]
    assert redis_client.xlen(QUEUE) == 160
    assert [entry_id for entry_id, _ in redis_client.xrange(QUEUE, count=10)] == held_ids
    await queue.ack("slow", done(held))
    await queue.enqueue(task(9999))
    await queue.ack("fast", done(await queue.read("fast")))
    # Now everything but the newest entries was acked, so the stream shrinks to its bound
    # (approximately: whole nodes of 100 entries at most).
    assert redis_client.xlen(QUEUE) <= 50 + 100
    assert int(redis_client.xpending(QUEUE, GROUP)["pending"]) == 0


async def test_a_consumer_cannot_ack_or_move_a_task_taken_from_it(
    small_queue: tuple[TaskQueue, Settings], redis_client: redis.Redis
) -> None:
    queue, _ = small_queue
    await queue.enqueue(task(1))
    await queue.enqueue(task(2))
    first, second = await queue.read("old")
    for delivery in (first, second):
        redis_client.xclaim(QUEUE, GROUP, "new", 0, [delivery.entry_id])
    await queue.ack("old", done([first]))
    assert not await queue.defer("old", second, task(2).retried(1), 0, "retried", [])
    assert not await queue.dead_letter("old", second, "late", 1, [])
    pending = redis_client.xpending_range(QUEUE, GROUP, "-", "+", 10)
    assert [(row["message_id"], row["consumer"]) for row in pending] == [
        (first.entry_id, "new"),
        (second.entry_id, "new"),
    ]
    assert redis_client.xlen(QUEUE) == 2 and redis_client.xlen(QUEUE + ":dlq") == 0
    assert await queue.renew("old", [first.entry_id]) == []
    assert await queue.renew("new", [first.entry_id]) == [first.entry_id]


async def test_renewal_keeps_a_running_task_from_being_reclaimed(
    small_queue: tuple[TaskQueue, Settings], redis_client: redis.Redis
) -> None:
    queue, _ = small_queue
    await queue.enqueue(task(1))
    [delivery] = await queue.read("runner")
    redis_client.execute_command("XCLAIM", QUEUE, GROUP, "runner", 0, delivery.entry_id,
                                 "IDLE", 10**9, "JUSTID")  # fmt: skip
    await queue.renew("runner", [delivery.entry_id])
    assert await queue.reclaim("thief") == []
    [row] = redis_client.xpending_range(QUEUE, GROUP, "-", "+", 1)
    assert row["consumer"] == "runner" and row["times_delivered"] == 1


async def test_acks_survive_redis_forgetting_its_scripts(
    small_queue: tuple[TaskQueue, Settings], redis_client: redis.Redis
) -> None:
    queue, _ = small_queue
    await queue.enqueue(task(1))
    await queue.enqueue(task(2))
    first = await queue.read("w")
    redis_client.script_flush()  # what a restart of Redis does to the script cache
    await queue.read("w", done(first))
    assert int(redis_client.xpending(QUEUE, GROUP)["pending"]) == 0
    assert redis_client.hget(QUEUE + ":counters", "acked") == "2"


async def test_an_ack_this_server_never_delivered_trims_nothing_unread(
    small_queue: tuple[TaskQueue, Settings], redis_client: redis.Redis
) -> None:
    """As after a failover: a worker acks tasks the promoted replica never saw delivered."""
    queue, _ = small_queue
    # Small stream nodes, so that approximate trimming can cut inside these few entries.
    redis_client.config_set("stream-node-max-entries", 10)
    try:
        await _ack_a_ghost_then_read(queue, redis_client)
    finally:
        redis_client.config_set("stream-node-max-entries", 100)


async def _ack_a_ghost_then_read(queue: TaskQueue, redis_client: redis.Redis) -> None:
    for index in range(45):
        await queue.enqueue(task(index))
    await queue.ack("w", done(await queue.read("w")))  # all 45 acked: nothing pending
    unread = [await queue.enqueue(task(100 + index)) for index in range(40)]
    ghost = Finished(entry_ids=[unread[-1]], events=[])  # delivered elsewhere, not here
    await queue.ack("w", ghost)
    held = [entry_id for entry_id, _ in redis_client.xrange(QUEUE)]
    assert [entry_id for entry_id in unread if entry_id not in held] == []
    assert [delivery.entry_id for delivery in await queue.read("w")] == unread
