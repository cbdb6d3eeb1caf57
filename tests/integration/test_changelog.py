"""The worker's state reads and checkpoint writes against the real broker: they write
what Faust's table would write (local store, changelog records, persisted offset), hold
acks until delivery, and a delivery that fails stops the worker instead of being passed
by a commit."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import TP

from detector.stream.app import create_app
from detector.stream.changelog import ChangelogIO
from detector.stream.clients import changelog_topic
from detector.stream.settings import StreamSettings
from tests.helpers import policy
from tests.integration.streaming import create_topic

pytestmark = pytest.mark.kafka

PARTITIONS = 2


@asynccontextmanager
async def started_table(bootstrap: str, store: str, tmp: Path) -> AsyncIterator[tuple[Any, Any]]:
    """The worker's app and state table, its producer started and its changelog topic
    made, without a worker: nothing consumes, so only the state I/O writes."""
    settings = StreamSettings(
        bootstrap_servers=bootstrap,
        app_id=f"changelog-{uuid.uuid4().hex[:8]}",
        partitions=PARTITIONS,
        store=store,
        data_dir=str(tmp),
    )
    app = create_app(settings, policy())
    await create_topic(bootstrap, changelog_topic(settings), PARTITIONS)
    await app.producer.start()
    try:
        yield app, app.sessionwatch["table"]  # type: ignore[attr-defined]
    finally:
        await app.producer.stop()


async def changelog(bootstrap: str, topic: str, partition: int) -> list[tuple[int, bytes, Any]]:
    """Every record of the changelog partition: offset, key, value (None: a deletion)."""
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        records: list[tuple[int, bytes, Any]] = []
        while await consumer.position(tp) < end:
            for r in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                records.append((r.offset, r.key, r.value))
        return records
    finally:
        await consumer.stop()


def local(table: Any) -> dict[bytes, bytes]:
    """The local store's entries, of every partition (Faust's own iteration shows only
    partitions assigned to a running worker)."""
    store = table.data
    if hasattr(store, "_db_for_partition"):
        return {
            key: value
            for p in range(PARTITIONS)
            for key, value in store._visible_items(store._db_for_partition(p))
        }
    return dict(store.data)


class Failures:
    def __init__(self) -> None:
        self.seen: list[BaseException] = []

    async def __call__(self, exc: BaseException) -> None:
        self.seen.append(exc)


@pytest.mark.parametrize("store", ["rocksdb://", "memory://"])
def test_a_checkpoints_writes_reach_the_store_and_changelog_as_faust_writes_them(
    kafka_bootstrap: str, tmp_path: Path, store: str
) -> None:
    async def run() -> None:
        async with started_table(kafka_bootstrap, store, tmp_path) as (app, table):
            failures = Failures()
            state = ChangelogIO(app, table, on_failure=failures)
            topic = table.changelog_topic.get_topic_name()
            state.put(0, b"u:alice", b"A1", 10, None)
            state.put(1, b"u:carol", b"C1", 3, None)
            state.put(0, b"u:bob", b"B1", 12, None)
            state.end()
            # Written locally at once; acks wait for the changelog.
            assert local(table) == {b"u:alice": b"A1", b"u:bob": b"B1", b"u:carol": b"C1"}
            assert state.undelivered_from() == {0: 10, 1: 3}
            state.put(0, b"u:alice", b"A2", 20, None)
            state.put(0, b"u:bob", None, None, None)  # a sweep's deletion
            state.end()
            assert state.undelivered_from() == {0: 10, 1: 3}
            big = [(f"g:{n}".encode(), bytes([n]) * 20_000) for n in range(30)]
            for key, value in big:  # far more than one produce batch
                state.put(1, key, value, 30 + len(key), None)
            state.end()
            last_key = big[-1][0]
            state.put(1, last_key, b"newest", 99, None)  # sent after all of the above
            state.end()
            await state.drain()
            assert state.undelivered_from() == {}
            assert failures.seen == []
            assert state.batches > 3

            p0 = await changelog(kafka_bootstrap, topic, 0)
            p1 = await changelog(kafka_bootstrap, topic, 1)
            assert [(k, v) for _, k, v in p0] == [
                (b"u:alice", b"A1"),
                (b"u:bob", b"B1"),
                (b"u:alice", b"A2"),
                (b"u:bob", None),
            ]
            assert [(k, v) for _, k, v in p1] == [(b"u:carol", b"C1"), *big, (last_key, b"newest")]
            assert state.get(0, b"u:alice") == b"A2" and state.get(0, b"u:bob") is None
            assert local(table) == {
                b"u:alice": b"A2",
                b"u:carol": b"C1",
                **dict(big),
                last_key: b"newest",
            }
            # Faust's sensor counts them as its table's operations, the reads at the next end.
            ops = app.monitor.tables[table.name]
            assert (ops.keys_retrieved, ops.keys_updated, ops.keys_deleted) == (0, 35, 1)
            state.end()
            assert (ops.keys_retrieved, ops.keys_updated, ops.keys_deleted) == (2, 35, 1)
            if store == "rocksdb://":  # where Faust's recovery of each partition resumes
                assert table.data.persisted_offset(TP(topic, 0)) == p0[-1][0]
                assert table.data.persisted_offset(TP(topic, 1)) == p1[-1][0]
                # Without RocksDB's own log (the changelog is the state's log), and kept
                # over a clean close, which flushes what the log would have held.
                paths = [table.data.partition_path(p) for p in range(PARTITIONS)]
                assert [f.stat().st_size for p in paths for f in p.glob("*.log")] == [0, 0]
                before = local(table)
                await table.data.stop()  # Faust's stop: its handles dropped, so closed
                assert local(table) == before
                assert table.data.persisted_offset(TP(topic, 0)) == p0[-1][0]
                assert table.data.persisted_offset(TP(topic, 1)) == p1[-1][0]
            else:
                assert table.data.persisted_offset(TP(topic, 0)) is None

    asyncio.run(run())


def test_a_failed_delivery_stops_the_worker_and_holds_its_acks(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A record the broker refuses (over its 1 MB message.max.bytes) fails its batch: the
    failure goes to ``on_failure`` (the app's crash), the records behind it are never
    acked, and nothing written after it reaches the changelog of any partition."""

    async def run() -> None:
        async with started_table(kafka_bootstrap, "rocksdb://", tmp_path) as (app, table):
            failures = Failures()
            state = ChangelogIO(app, table, on_failure=failures)
            topic = table.changelog_topic.get_topic_name()
            state.put(0, b"u:alice", b"A1", 5, None)
            state.end()
            await state.drain()
            assert state.undelivered_from() == {}
            state.put(0, b"u:alice", b"x" * 1_500_000, 7, None)
            state.end()
            await state.drain()
            assert len(failures.seen) == 1
            assert state.undelivered_from() == {0: 7}
            state.put(0, b"u:alice", b"A3", 9, None)
            state.put(1, b"u:carol", b"C1", 2, None)
            state.end()
            await state.drain()
            assert state.undelivered_from() == {0: 7, 1: 2}
            assert [(k, v) for _, k, v in await changelog(kafka_bootstrap, topic, 0)] == [
                (b"u:alice", b"A1")
            ]
            assert await changelog(kafka_bootstrap, topic, 1) == []
            assert table.data.persisted_offset(TP(topic, 0)) == 0

    asyncio.run(run())
