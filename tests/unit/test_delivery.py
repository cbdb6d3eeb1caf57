"""The worker's changes to Faust's delivery loop and producer buffer (detector.stream.app).

Run against Faust's own consumer and buffer, without a broker: the fetch loop is Faust's
``_drain_messages`` fed by a fake ``getmany``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from types import CoroutineType, SimpleNamespace
from typing import Any, cast

import pytest

from detector.stream import app as stream_app


def _faust() -> tuple[Any, Any, Callable[[int], Any]]:
    """A Faust app (never connected), its consumer and a message maker."""
    import faust
    from faust.types import TP
    from faust.types.tuples import ConsumerMessage

    app = faust.App("delivery", broker="kafka://127.0.0.1:1")
    tp = TP("events", 0)

    def message(offset: int) -> ConsumerMessage:
        return ConsumerMessage(
            "events", 0, offset, 0.0, 0, [], b"k", b"v", None, 1, 1, tp, generation_id=1
        )  # fmt: skip

    return app, app.consumer, message


def _count_fallbacks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    faust_wait_first = stream_app._service_wait_first

    async def counted(self: Any, *coros: Any, **kw: Any) -> Any:
        calls.append(1)
        return await faust_wait_first(self, *coros, **kw)

    monkeypatch.setattr(stream_app, "_service_wait_first", counted)
    return calls


def test_deliveries_that_do_not_block_run_inline_and_one_that_blocks_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Faust's fetch loop, unchanged, delivers through the patched ``wait_first``: each
    delivery that does not block finishes inline (no tasks), one that blocks goes on
    from where it stopped under Faust's ``wait_first``, and the order holds."""
    import mode

    fallbacks = _count_fallbacks(monkeypatch)

    async def scenario() -> list[int]:
        _, consumer, message = _faust()
        fetcher = mode.Service()
        release = asyncio.Event()
        delivered: list[int] = []

        async def deliver(msg: Any) -> None:
            delivered.append(msg.offset)
            if msg.offset == 2:
                await release.wait()  # blocks: a full stream buffer, say
                delivered.append(-2)  # went on after the block

        async def getmany(timeout: float) -> AsyncIterator[tuple[Any, Any]]:
            for offset in range(5):
                yield message(offset).tp, message(offset)
            fetcher._stopped.set()

        consumer.callback = deliver
        consumer.getmany = getmany
        asyncio.get_running_loop().call_later(0.05, release.set)
        await asyncio.wait_for(consumer._drain_messages(fetcher), 5)
        return delivered

    assert asyncio.run(scenario()) == [0, 1, 2, -2, 3, 4]
    assert len(fallbacks) == 1  # only the delivery that blocked


def test_a_rebalance_interrupts_a_blocked_delivery_as_in_faust() -> None:
    """What Faust's ``wait_first`` exists for: a delivery blocked on a full buffer is
    cancelled when the flow is suspended for a rebalance, and the loop moves on."""

    async def scenario() -> tuple[list[str], bool]:
        _, consumer, message = _faust()
        seen: list[str] = []

        async def deliver(msg: Any) -> None:
            seen.append("started")
            try:
                await asyncio.Event().wait()  # never set
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise

        waiting = asyncio.ensure_future(
            consumer.wait_first(deliver(message(0)), consumer.suspend_flow.wait())
        )
        await asyncio.sleep(0.01)
        assert not waiting.done()
        consumer.suspend_flow.set()
        await asyncio.wait_for(waiting, 2)
        await asyncio.sleep(0)  # the cancellation reaches the delivery
        # Flow already suspended: Faust's own path, which also never finishes it.
        await asyncio.wait_for(
            consumer.wait_first(deliver(message(1)), consumer.suspend_flow.wait()), 2
        )
        await asyncio.sleep(0)
        return seen, consumer.wait_first.__func__ is stream_app._deliver_first

    seen, patched = asyncio.run(scenario())
    assert seen == ["started", "cancelled", "started", "cancelled"]
    assert patched


def test_an_error_in_an_inline_delivery_reaches_the_fetch_loop() -> None:
    async def scenario() -> CoroutineType[Any, Any, None]:
        _, consumer, message = _faust()

        async def deliver(msg: Any) -> None:
            raise ValueError("bad message")

        suspended = consumer.suspend_flow.wait()
        with pytest.raises(ValueError, match="bad message"):
            await consumer.wait_first(deliver(message(0)), suspended)
        return cast("CoroutineType[Any, Any, None]", suspended)

    suspended = asyncio.run(scenario())
    assert suspended.cr_frame is None  # closed, not left "never awaited"


def test_a_flush_waits_for_what_was_put_before_it_not_for_an_empty_buffer() -> None:
    """A commit flushes the producer buffer after taking its offsets; only the messages
    put before that belong to those offsets. With the agent still producing, the buffer
    may never be empty: the flush must still return, once those are with aiokafka."""

    async def scenario() -> tuple[list[int], int]:
        app, _, _ = _faust()
        buffer = app.producer.buffer
        published: list[int] = []

        class Channel:
            async def publish_message(self, fut: Any, wait: bool) -> None:
                await asyncio.sleep(0.002)  # slower than messages arrive below
                published.append(fut.n)

        channel = Channel()

        def put(n: int) -> None:
            buffer.put(SimpleNamespace(n=n, message=SimpleNamespace(channel=channel)))

        await buffer.start()
        try:
            for n in range(5):
                put(n)

            async def keep_producing() -> None:
                n = 5
                while True:
                    put(n)
                    n += 1
                    await asyncio.sleep(0.001)

            producing = asyncio.ensure_future(keep_producing())
            await asyncio.wait_for(buffer.flush(), 5)
            at_return, left = list(published), buffer.size
            producing.cancel()
            await asyncio.wait_for(buffer.flush(), 5)  # the rest, before stopping
            return at_return, left
        finally:
            await buffer.stop()

    at_return, left = asyncio.run(scenario())
    assert at_return[:5] == [0, 1, 2, 3, 4]
    assert left > 0  # it did not wait for an empty buffer


def test_faust_holding_deliveries_back_is_logged_only_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Over 100 buffered messages Faust's buffer holds the stream back and says so, as a
    warning, each time: flow control, not a fault. Logged at DEBUG when asked for, else
    not at all; the hold-back itself (the ebb) is Faust's, unchanged."""

    async def hold_back() -> int:
        app, _, _ = _faust()
        buffer = app.producer.buffer
        assert buffer.max_messages == 100

        class Channel:
            async def publish_message(self, fut: Any, wait: bool) -> None:
                await asyncio.sleep(0)

        channel = Channel()
        await buffer.start()
        try:
            for _ in range(150):
                buffer.put(SimpleNamespace(message=SimpleNamespace(channel=channel)))
            await asyncio.wait_for(buffer.wait_until_ebb(), 5)
            return int(buffer.size)
        finally:
            await buffer.flush()
            await buffer.stop()

    def notices() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage().startswith("producer ")]

    caplog.set_level(logging.INFO)
    assert asyncio.run(hold_back()) <= 100
    assert not notices()

    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="faust.transport.producer")
    asyncio.run(hold_back())
    assert notices() and {r.levelname for r in notices()} == {"DEBUG"}
    assert notices()[0].getMessage().startswith("producer buffer full size")


def test_a_fetch_waits_briefly_while_a_partition_is_out_for_a_full_stream_buffer() -> None:
    """Faust takes a partition out of the fetch while its stream's buffer is full and
    puts it back when the buffer drains. A fetch that then waited its full second for
    the partitions left (none with data) kept the drained agent idle: it waits at most
    PRESSURE_POLL_S while any partition is out, and its full timeout otherwise."""
    from faust.types import TP

    async def scenario() -> list[tuple[list[int], float]]:
        _, consumer, _ = _faust()
        events, leader = TP("events", 0), TP("leader", 0)
        consumer._active_partitions = {events, leader}
        asked: list[tuple[list[int], float]] = []

        async def getmany(active_partitions: set[Any], timeout: float) -> dict[Any, Any]:
            asked.append(
                (sorted(tp.partition for tp in active_partitions if tp == events), timeout)
            )
            return {}

        consumer._getmany = getmany
        await consumer._wait_next_records(1.0)
        consumer.on_buffer_full(events)  # what the conductor does at high pressure
        await consumer._wait_next_records(1.0)
        consumer.on_buffer_drop(events)
        await consumer._wait_next_records(1.0)
        return asked

    assert asyncio.run(scenario()) == [
        ([0], 1.0),
        ([], stream_app.PRESSURE_POLL_S),  # out: ask again soon
        ([0], 1.0),  # back in
    ]


def test_the_kafka_consumer_faust_builds_waits_at_most_fetch_max_wait_for_data() -> None:
    """Faust builds its consumer with a fixed 1,500 ms fetch wait; under load a fetch of
    only data-less partitions (its leader topic) then held every other fetch back for
    that long. The consumer Faust builds, through its own factory, waits 100 ms."""

    async def scenario() -> tuple[int, int]:
        app, consumer, _ = _faust()
        built = consumer._thread._create_worker_consumer(app.transport)
        try:
            return built._fetch_max_wait_ms, stream_app.FETCH_MAX_WAIT_MS
        finally:
            await built.stop()

    assert asyncio.run(scenario()) == (100, 100)


def _record(topic: str, partition: int, offset: int) -> Any:
    """A fetched record, as the Kafka client hands it to Faust."""
    from aiokafka.structs import ConsumerRecord

    value = f"{offset}".encode()
    return ConsumerRecord(topic, partition, offset, 0, 0, b"k", value, None, 1, 2, ())


def test_a_fetch_hands_a_direct_topics_records_over_at_once_and_others_to_the_loop() -> None:
    """One fetch through the worker's ``getmany``: the records of the direct topic reach
    its handler in one call, per partition in offset order, with the generation they were
    fetched in, after Faust's checks (an inactive partition's records are left out); the
    other topic's records still come out one at a time, as Faust's messages, first."""
    from faust.types import TP

    async def scenario() -> tuple[list[object], list[tuple[TP, int]], dict[TP, int]]:
        app, consumer, _ = _faust()
        events0, events1, events2 = TP("events", 0), TP("events", 1), TP("events", 2)
        other = TP("changelog", 0)
        fetched = {
            events0: [_record("events", 0, o) for o in range(10, 14)],
            events1: [_record("events", 1, o) for o in range(3)],
            events2: [_record("events", 2, o) for o in range(5)],  # not active: left out
            other: [_record("changelog", 0, o) for o in range(2)],
        }
        handed: list[object] = []

        async def handler(records_by_tp: dict[TP, list[Any]], generation: int) -> None:
            handed.append(generation)
            handed.append({tp: [r.offset for r in rs] for tp, rs in records_by_tp.items()})

        async def wait_next_records(timeout: float) -> Any:
            return fetched, {events0, events1, other}

        tracked: dict[TP, int] = {}
        app.monitor.track_tp_end_offset = tracked.__setitem__
        app.sessionwatch_direct = {"events": handler}
        app.consumer_generation_id = 4
        app.flow_control.resume()
        consumer._wait_next_records = wait_next_records
        consumer.highwater = lambda tp: 100 + tp.partition
        passed = []
        async for tp, m in consumer.getmany(timeout=1.0):
            assert handed == []  # the other topic's records come first
            passed.append((tp, m.offset))
        return handed, passed, tracked

    handed, passed, tracked = asyncio.run(scenario())
    assert handed == [4, {TP("events", 0): [10, 11, 12, 13], TP("events", 1): [0, 1, 2]}]
    assert passed == [(TP("changelog", 0), 0), (TP("changelog", 0), 1)]
    assert tracked == {TP("changelog", 0): 100, TP("events", 0): 100, TP("events", 1): 101}


@pytest.mark.parametrize("others", [1, 2])
def test_a_fetch_is_dropped_as_in_faust_when_the_flow_stops_or_the_generation_moves(
    others: int,
) -> None:
    """A fetch that returns while a rebalance has stopped the flow is dropped and the
    consumer seeks back to its commits, as Faust's ``getmany`` does; once the generation
    moves while the fetch's other records are passed on, its direct records are dropped
    too (their partitions may have moved; Kafka delivers them again from the commit)."""
    from faust.types import TP

    async def scenario() -> tuple[list[int], int, list[int]]:
        app, consumer, _ = _faust()
        fetched = {
            TP("changelog", 0): [_record("changelog", 0, o) for o in range(others)],
            TP("events", 0): [_record("events", 0, o) for o in range(3)],
        }
        handed: list[int] = []

        async def handler(records_by_tp: dict[TP, list[Any]], generation: int) -> None:
            handed.append(generation)

        async def wait_next_records(timeout: float) -> Any:
            return fetched, None

        sought: list[int] = []

        async def perform_seek() -> None:
            sought.append(1)

        app.sessionwatch_direct = {"events": handler}
        app.consumer_generation_id = 1
        consumer._wait_next_records = wait_next_records
        consumer.highwater = lambda tp: 100
        consumer.perform_seek = perform_seek
        consumer.stop_flow()  # a rebalance began
        stopped = [m async for _, m in consumer.getmany(timeout=1.0)]
        assert stopped == [] and handed == [] and sought == [1]
        consumer.resume_flow()
        passed = 0
        async for _ in consumer.getmany(timeout=1.0):
            passed += 1
            app.consumer_generation_id = 2  # a rebalance completes meanwhile
        return handed, passed, sought

    handed, passed, sought = asyncio.run(scenario())
    assert handed == [] and passed == 1 and sought == [1]


def test_without_direct_topics_a_fetch_is_faust_s() -> None:
    from faust.types import TP

    async def scenario() -> list[tuple[TP, int]]:
        _, consumer, _ = _faust()
        fetched = {TP("events", 0): [_record("events", 0, o) for o in range(3)]}

        async def wait_next_records(timeout: float) -> Any:
            return fetched, set(fetched)

        consumer._wait_next_records = wait_next_records
        consumer.highwater = lambda tp: 100
        return [(tp, m.offset) async for tp, m in consumer.getmany(timeout=1.0)]

    assert asyncio.run(scenario()) == [(TP("events", 0), o) for o in range(3)]


def test_direct_delivery_takes_chunks_and_holds_back_as_faust_s_conductor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The records of a fetch go to the agent body in chunks of at most DIRECT_CHUNK,
    across partitions (runs of one partition each);
    before each, the delivery waits while a rebalance suspends the flow and while the
    producer buffer is over its limit, as Faust's conductor does before each record."""
    from faust.types import TP

    async def scenario() -> tuple[list[list[tuple[int, int]]], list[str]]:
        app, _, _ = _faust()
        chunk = stream_app.DIRECT_CHUNK
        by_tp = {
            TP("events", 0): [_record("events", 0, o) for o in range(chunk + 20)],
            TP("events", 1): [_record("events", 1, o) for o in range(chunk)],
        }
        taken: list[list[tuple[int, int]]] = []
        seen: list[str] = []
        buffer = app.producer.buffer

        def take(chunk: list[tuple[TP, list[Any]]], generation: int) -> None:
            assert generation == 1
            assert all(r.partition == tp.partition for tp, run in chunk for r in run)
            batch = [r for _, run in chunk for r in run]
            taken.append([(r.partition, r.offset) for r in batch])
            assert all(r.value == f"{r.offset}".encode() for r in batch)
            if len(taken) == 1:
                app.flow_control.suspend()  # a rebalance begins
                asyncio.get_running_loop().call_later(0.05, resume)
            elif len(taken) == 2:
                pending[0] = buffer.max_messages + 1

        def resume() -> None:
            seen.append("resumed")
            app.flow_control.resume()

        async def wait_until_ebb() -> None:
            seen.append("ebb")
            pending[0] = 0

        buffer.wait_until_ebb = wait_until_ebb
        pending = [0]
        monkeypatch.setattr(type(buffer), "size", property(lambda self: pending[0]))
        observed: list[float] = []
        app.flow_control.resume()
        deliver = stream_app.direct_delivery(app, take, observed.append)
        await asyncio.wait_for(deliver(by_tp, 1), 5)
        assert len(observed) == len(taken)
        return taken, seen

    taken, seen = asyncio.run(scenario())
    chunk = stream_app.DIRECT_CHUNK
    assert [len(batch) for batch in taken] == [chunk, chunk, 20]
    flat = [at for batch in taken for at in batch]
    assert flat == [(0, o) for o in range(chunk + 20)] + [(1, o) for o in range(chunk)]
    assert seen == ["resumed", "ebb"]  # the second chunk after the resume, the third after the ebb


def test_the_worker_takes_its_startup_objects_out_of_the_garbage_collectors_view(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """Full collections walked every object the worker started with, ~100 ms each, with
    alerts waiting behind them: a task of the app freezes them once it has started, and
    makes full collections rarer."""
    import gc

    from detector.policy import Policy
    from detector.stream.settings import StreamSettings

    monkeypatch.setenv("SESSIONWATCH_KEY", "k")
    settings = StreamSettings()
    settings.data_dir = str(tmp_path)
    app = stream_app.create_app(settings, Policy.load(None))
    task = next(t for t in app._app_tasks if "freeze_startup_objects" in repr(t))
    before, thresholds = gc.get_freeze_count(), gc.get_threshold()
    try:
        asyncio.run(cast("CoroutineType[Any, Any, None]", task()))
        assert gc.get_freeze_count() > before
        # ... and full collections, which walk the records in flight, are ten times rarer
        assert gc.get_threshold() == (*thresholds[:2], stream_app.FULL_COLLECTION_EVERY)
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_direct_delivery_lets_other_tasks_run_between_chunks() -> None:
    """A fetch catching up holds a second's work; the producer, timers and rebalance
    callbacks run between its chunks, not after the whole fetch."""
    from faust.types import TP

    async def scenario() -> list[int]:
        app, _, _ = _faust()
        app.flow_control.resume()
        taken: list[int] = []
        ran_at: list[int] = []
        records = [_record("events", 0, o) for o in range(3 * stream_app.DIRECT_CHUNK)]
        deliver = stream_app.direct_delivery(
            app, lambda c, g: taken.append(sum(len(run) for _, run in c)), lambda s: None
        )
        asyncio.get_running_loop().call_soon(lambda: ran_at.append(len(taken)))
        await deliver({TP("events", 0): records}, 1)
        return ran_at

    assert asyncio.run(scenario()) == [1]


def test_a_live_fetch_of_a_few_records_per_partition_is_one_chunk() -> None:
    """Live traffic fetches a few records of each partition: they go to the agent body
    together (one checkpoint, one turn of the event loop), as runs of one partition; a
    catching-up fetch is cut every DIRECT_CHUNK records, runs split where the cut falls."""
    from faust.types import TP

    chunk = stream_app.DIRECT_CHUNK
    live = {TP("events", p): [_record("events", p, o) for o in range(3)] for p in range(8)}
    (only,) = stream_app._chunks(live)
    assert [(tp.partition, len(run)) for tp, run in only] == [(p, 3) for p in range(8)]
    big = {
        TP("events", 0): [_record("events", 0, o) for o in range(chunk + 20)],
        TP("events", 1): [_record("events", 1, o) for o in range(chunk)],
    }
    shapes = [[(tp.partition, len(run)) for tp, run in c] for c in stream_app._chunks(big)]
    assert shapes == [[(0, chunk)], [(0, 20), (1, chunk - 20)], [(1, 20)]]
    runs = [r for c in stream_app._chunks(big) for _, run in c for r in run]
    assert runs == big[TP("events", 0)] + big[TP("events", 1)]


@pytest.mark.parametrize(("failover", "heartbeat"), [(10.0, 3.0), (6.0, 2.0), (90.0, 3.0)])
def test_the_failover_is_the_group_s_session_timeout_with_three_heartbeats_in_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, failover: float, heartbeat: float
) -> None:
    """Faust's 60 s would leave a killed worker's partitions undetected for a minute; a
    heartbeat interval over a third of the timeout would let one late beat end a member."""
    from detector.policy import Policy
    from detector.stream.settings import StreamSettings

    monkeypatch.setenv("SESSIONWATCH_KEY", "k")
    monkeypatch.setenv("SESSIONWATCH_FAILOVER_SECONDS", str(failover))
    settings = StreamSettings()
    settings.data_dir = str(tmp_path)
    conf = stream_app.create_app(settings, Policy.load(None)).conf
    assert (conf.broker_session_timeout, conf.broker_heartbeat_interval) == (failover, heartbeat)
