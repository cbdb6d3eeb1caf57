"""State writes of a checkpoint, per partition in one step.

Through Faust's table, each changed entry is a changelog message of its own: a Faust
message and future, a trip through Faust's producer buffer, a callback on delivery
and a RocksDB write of the persisted offset, besides the entry's own write (a fifth
of the worker's busy time catching up). :class:`ChangelogIO` writes a partition's
entries of one checkpoint as one RocksDB write batch and hands them to the Kafka
client as whole produce batches; the persisted offset is written once, when the last
batch is delivered. What it writes is what Faust's table writes (same changelog
topic, partition, key and value bytes; same local store), so Faust's recovery,
standbys and rebalancing read it as their own.

It is also stricter about what a commit covers. Faust commits after flushing its
producer, but a changelog message whose delivery fails only logs an error in its
callback, and the source offsets are committed all the same. Here a checkpoint's
records are acked only once their changelog batches are delivered
(:meth:`ChangelogIO.undelivered_from`); a delivery that fails stops the worker,
which then starts again from the last commit.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from itertools import islice
from typing import Any, cast

from faust.stores.rocksdb import Store as RocksDBStore
from faust.types import TP

from detector.stream.bundle import scan_keys
from detector.stream.sensor import QuickPrometheusMonitor

log = logging.getLogger(__name__)


class _Flight:
    """One partition's writes of one checkpoint, from their hand-over to delivery."""

    __slots__ = ("first",)

    def __init__(self, first: int) -> None:
        self.first = first


class ChangelogIO:
    """A :class:`detector.stream.bundle.StateIO` for a Faust table of bytes to bytes.

    ``put`` gathers a checkpoint's writes per partition; ``end`` writes them to the local
    store at once (visible to the next read) and queues their changelog batches, one
    sender per partition so that a key's writes reach the changelog in the order made.
    ``on_failure`` (the app's ``crash`` by default) gets a failed delivery's error.
    """

    def __init__(
        self,
        app: Any,
        table: Any,
        on_failure: Callable[[BaseException], Awaitable[object]] | None = None,
    ) -> None:
        self._app = app
        self._table = table
        self._on_failure = app.crash if on_failure is None else on_failure
        self._rows: dict[int, list[tuple[bytes, bytes | None]]] = {}
        self._first: dict[int, int] = {}
        self._flights: dict[int, deque[_Flight]] = {}
        self._tails: dict[int, asyncio.Future[None]] = {}
        self.failed: BaseException | None = None
        self.batches = 0  # produce batches handed to the Kafka client
        self._gets = 0  # reads not yet counted by the sensor

    def get(self, partition: int, key: bytes) -> bytes | None:
        """As Faust's table reads a key under an event of ``partition``, in one lookup
        (the table's ``get`` makes two: ``in``, then the read)."""
        self._gets += 1  # counted at the next end
        store = self._table.data
        if isinstance(store, RocksDBStore):
            value: bytes | None = store._db_for_partition(partition).get(key)
            if value is not None:
                store._key_index[key] = partition
            return value
        return cast(bytes | None, store.data.get(key))

    def put(
        self, partition: int, key: bytes, value: bytes | None, first: int | None, token: Any
    ) -> None:
        rows = self._rows.get(partition)
        if rows is None:
            rows = self._rows[partition] = []
        rows.append((key, value))
        if first is not None:
            known = self._first.get(partition)
            if known is None or first < known:
                self._first[partition] = first

    def end(self) -> None:
        if not self._rows:
            self._count(0, 0)
            return
        rows_by_partition, self._rows = self._rows, {}
        firsts, self._first = self._first, {}
        topic = self._table.changelog_topic.get_topic_name()
        producer = self._app.producer._ensure_producer()
        written = deleted = 0
        for partition, rows in rows_by_partition.items():
            self._write_local(partition, rows)
            batches = [producer.create_batch()]
            for key, value in rows:
                if batches[-1].append(key=key, value=value, timestamp=None) is None:
                    batches.append(producer.create_batch())  # full: the next one
                    batches[-1].append(key=key, value=value, timestamp=None)
            first = firsts.get(partition)
            flight = None
            if first is not None:
                flight = _Flight(first)
                queue = self._flights.get(partition)
                if queue is None:
                    queue = self._flights[partition] = deque()
                queue.append(flight)
            tail = self._tails.get(partition)
            self._tails[partition] = asyncio.ensure_future(
                self._send(producer, topic, partition, batches, flight, tail)
            )
            written += len(rows)
            deleted += sum(1 for _, value in rows if value is None)
        self._count(written - deleted, deleted)

    def _count(self, updated: int, deleted: int) -> None:
        """Tells Faust's sensor of the reads since the last end and of this end's writes:
        at once to the worker's own sensor, one by one to any other."""
        retrieved, self._gets = self._gets, 0
        monitor, table = self._app.monitor, self._table
        if isinstance(monitor, QuickPrometheusMonitor):
            monitor.on_table_ops(table, retrieved, updated, deleted)
            return
        for _ in range(retrieved):
            monitor.on_table_get(table, None)
        for _ in range(updated):
            monitor.on_table_set(table, None, None)
        for _ in range(deleted):
            monitor.on_table_del(table, None)

    def undelivered_from(self) -> dict[int, int]:
        return {p: queue[0].first for p, queue in self._flights.items() if queue}

    def scan(self) -> Iterator[tuple[bytes, bytes]]:
        store = self._table.data
        if not isinstance(store, RocksDBStore):  # memory://: a dict
            return scan_keys(store.data, list(store.data))
        return _scan_rocksdb(store)

    async def drain(self) -> None:
        """Waits until everything handed over so far is delivered (or has failed)."""
        tails = list(self._tails.values())
        if tails:
            await asyncio.gather(*tails, return_exceptions=True)

    def _write_local(self, partition: int, rows: list[tuple[bytes, bytes | None]]) -> None:
        store = self._table.data
        if isinstance(store, RocksDBStore):
            # As Faust's Store._set and _del, for a whole partition at once.
            batch = _write_batch(store)
            key_index = store._key_index
            for key, value in rows:
                if value is None:
                    batch.delete(key)
                else:
                    batch.put(key, value)
                    key_index[key] = partition
            db = store._db_for_partition(partition)
            if store.use_rocksdict:
                db.set_write_options(_unlogged())  # this write, and the handle's from now
            db.write(batch)
        else:  # memory://: a dict
            data = store.data
            for key, value in rows:
                if value is None:
                    data.pop(key, None)
                else:
                    data[key] = value

    async def _send(
        self,
        producer: Any,
        topic: str,
        partition: int,
        batches: list[Any],
        flight: _Flight | None,
        tail: asyncio.Future[None] | None,
    ) -> None:
        if tail is not None:
            await asyncio.shield(tail)  # the partition's earlier writes go first
        if self.failed is not None:
            return  # the worker is stopping: nothing after a lost write may land
        try:
            delivered = [await producer.send_batch(b, topic, partition=partition) for b in batches]
            self.batches += len(batches)
            last = batches[-1]
            meta = (await asyncio.gather(*delivered))[-1]
        except Exception as exc:
            self.failed = exc
            log.error("state changelog write to %s/%s failed: %r", topic, partition, exc)
            await self._on_failure(exc)
            return
        store = self._table.data
        if isinstance(store, RocksDBStore) and partition in store._dbs:
            # Faust's _on_changelog_sent does this per message; the last one is what counts.
            store.set_persisted_offset(TP(topic, partition), meta.offset + last.record_count() - 1)
        if flight is not None:
            queue = self._flights[partition]
            assert queue[0] is flight
            queue.popleft()


#: Entries read from RocksDB per step of a scan.
SCAN_CHUNK = 64


def _scan_rocksdb(store: RocksDBStore) -> Iterator[tuple[bytes, bytes]]:
    """The assigned partitions' entries, each step a fresh iterator from the last key:
    no RocksDB iterator is held while the worker writes in between."""
    offset_key = store.offset_key
    for db in list(store._dbs_for_actives()):
        after: bytes | None = None
        while True:
            rows = list(islice(db.items(from_key=after), SCAN_CHUNK + 1))
            if after is not None and rows and rows[0][0] == after:
                del rows[0]
            else:
                del rows[SCAN_CHUNK:]
            if not rows:
                break
            for key, value in rows:
                if key != offset_key:
                    yield key, value
            after = rows[-1][0]


@functools.cache
def _unlogged() -> Any:
    """RocksDB write options without its write-ahead log, as Kafka Streams writes its
    state stores: the changelog is the state's log, and the local store is a copy that
    Faust's recovery brings up to date from it. Half the cost of a write (1.7-1.9 against
    3.2-4.0 us a 1.5 KB entry here), and none of the worker's CPU copying each state
    write into the log file (2.6-3.7 % of its CPU catching up). Set on the partition's handle, it
    covers Faust's own writes through it too, the persisted offset among them, so what a
    crash leaves is a prefix of the writes (the memtables flushed so far, in order), the
    offset never ahead of the data: recovery reads the changelog again from that offset.
    A clean close flushes the memtables (RocksDB does so when the log was off)."""
    from rocksdict import WriteOptions

    options = WriteOptions()
    options.disable_wal = True  # type: ignore[method-assign,assignment]  # a property (its stub says method)
    return options


def _write_batch(store: RocksDBStore) -> Any:
    """An empty write batch of the store's RocksDB binding."""
    if store.use_rocksdict:
        from rocksdict import WriteBatch

        return WriteBatch(raw_mode=True)
    import rocksdb  # type: ignore[import-not-found]

    return rocksdb.WriteBatch()
