"""The Faust application: session-events -> engine -> session-alerts / -actions / -dlq.

One agent body, run once at a time (state is per partition and order matters). It
gets a fetch's records at once, straight from Faust's fetch (``_getmany_taking_direct``),
because Faust's one-event-at-a-time path through its conductor and stream was half of
its time (``SESSIONWATCH_DELIVERY=stream`` keeps that path, in ``take_events`` batches).
It writes changed state at checkpoints, each entry in the partition of the last event
that changed it (changelog and local RocksDB alike), a partition's entries in one step
(:mod:`detector.stream.changelog`); offsets are acked only once their state is written
and its changelog delivered.
Detection itself is :class:`detector.engine.Engine`, exactly as in replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
import traceback
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, NamedTuple, cast

import faust
import msgspec
import orjson
from aiokafka.errors import KafkaConnectionError
from faust.exceptions import ConsumerNotStarted
from faust.sensors.prometheus import setup_prometheus_sensors
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Producer as AIOKafkaProducerService
from faust.transport.producer import ProducerBuffer
from faust.types import TP
from faust.types.tuples import ack_lock
from mode.services import WaitResults
from mode.utils.futures import notify

from detector.alerts import Alert
from detector.deadletter import DeadLetter, dead_letter
from detector.engine import Engine
from detector.events import Event, InvalidEvent, decode
from detector.fastpath import bundle_path
from detector.fingerprint import Fingerprinter
from detector.metrics import LAG_BUCKETS, Metrics, registry_with
from detector.policy import Policy
from detector.stream.api import install_api
from detector.stream.bundle import BundleStore, WriteBudget
from detector.stream.changelog import ChangelogIO
from detector.stream.clients import fetch_range, partition_count, resume_offset
from detector.stream.fetch import decode_topic
from detector.stream.fetch import install as install_fetch_decoding
from detector.stream.ordering import Hole, OffsetGate, Verdict
from detector.stream.outbox import Outbox, Resumed
from detector.stream.records import NO_VALUE, record_applier
from detector.stream.repeats import hold_back_repeats
from detector.stream.routing import KeyPartitioner, routing_key
from detector.stream.sensor import QuickPrometheusMonitor
from detector.stream.sensor import install as install_quick_sensor
from detector.stream.settings import StreamSettings, heartbeat_seconds

log = logging.getLogger(__name__)

#: Event-time seconds between sweeps of dead bundles (a scan of the local table).
STREAM_SWEEP_EVERY_S = 900.0
#: Seconds between checks for partitions whose events stopped coming (InOrder.watch).
WATCH_EVERY_S = 5.0
#: At most this many offsets behind are read to tell commit markers from undelivered events.
MARKERS_PROBE = 64
#: Everything is written early once this many records wait for their state's write
#: (bounds the memory of unwritten state and what a crash makes the worker read again).
#: Above the records of a checkpoint interval at the worker's rates (5 s at 30,000
#: events/s): an early write is a burst, and at 50,000 one came every few seconds from
#: 10,000 events/s on, holding alerts back (p99 290 ms in the benchmark).
MAX_UNACKED = 200_000
#: Rolling checkpoints' time for writes while records come (``WriteBudget``): this share
#: of the wall time, a flush once 10 ms have gathered (fewer, larger flushes: each pays
#: per partition written), at most 20 ms at a time (past its first few dozen writes;
#: the rest, oldest first, wait). A catch-up's last seconds of changes fall due
#: together: written in one go, ~5,000 bundles held the live events behind them for
#: ~300 ms.
ROLLING_WRITES_SHARE = 0.25
ROLLING_WRITES_LEAST_S = 0.01
ROLLING_WRITES_MOST_S = 0.02
#: The share while writes fall behind (a change has waited twice the interval): on a
#: slow hour a quarter may not keep up, and the backlog would wait for a full checkpoint.
ROLLING_WRITES_BEHIND_SHARE = 0.5
#: With no records coming, everything changed is written ahead of its due time, in
#: slices of this long with the event loop's other work (a record that came) between.
IDLE_WRITES_SLICE_S = 0.01
#: Longest wait of a fetch while a partition is out of it for a full stream buffer.
PRESSURE_POLL_S = 0.02
#: Longest wait of a fetch for data (Faust's is 1,500 ms; see _create_worker_consumer).
FETCH_MAX_WAIT_MS = 100
#: How long the producer gathers sends into one request (Faust's default: none, so
#: nearly every changelog write or alert went out in a request of its own; Kafka's own
#: producer waits 5 ms by default). Adds at most this much to an alert's latency.
PRODUCER_LINGER_S = 0.005
#: How old the consumer's view of the cluster may grow (Faust's and Kafka's default: 5
#: minutes). A worker that subscribed while its broker was away kept the failed view:
#: its group's assignment then ignored every topic as missing, and the worker, up and
#: holding nothing, waited out the whole age before it asked again and rejoined. One
#: metadata request this often per worker is nothing to the broker.
METADATA_MAX_AGE_S = 5.0

_json = msgspec.json.Encoder()


def _broker_credentials(settings: StreamSettings) -> Any:
    if settings.security_protocol == "SSL":
        return faust.SSLCredentials(settings.ssl_context())
    if settings.security_protocol.startswith("SASL"):
        ssl = settings.ssl_context() if settings.security_protocol == "SASL_SSL" else None
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password,
            mechanism=settings.sasl_mechanism,
            ssl_context=ssl,
        )
    return None


class _Progress:
    """Messages put into a producer buffer, and how many of them were handed to aiokafka."""

    __slots__ = ("handed", "queued")

    def __init__(self) -> None:
        self.queued = self.handed = 0


_progress: weakref.WeakKeyDictionary[ProducerBuffer, _Progress] = weakref.WeakKeyDictionary()


def _progress_of(buffer: ProducerBuffer) -> _Progress:
    progress = _progress.get(buffer)
    if progress is None:
        progress = _progress[buffer] = _Progress()
    return progress


def _put_counted(self: ProducerBuffer, fut: Any) -> None:
    _progress_of(self).queued += 1
    _faust_put(self, fut)


async def _send_counted(self: ProducerBuffer, fut: Any) -> None:
    """``_send_pending``, counted once the message is with aiokafka. Faust's buffer task
    takes a message off its queue *before* that hand-over (which may wait for topic
    metadata or room in a batch), so an empty queue does not mean nothing is pending."""
    try:
        await _send_pending(self, fut)
    finally:
        _progress_of(self).handed += 1


async def _drain(self: ProducerBuffer) -> None:
    """Faust's ``ProducerBuffer.flush`` gives up after 0.1 s without progress even with
    messages still queued (a busy event loop is enough), and returns while the last
    message is still being handed to aiokafka. Commits rely on it, so an event could be
    committed with its alerts or state still in the buffer, and lost in a crash. This
    waits until every message put *before the call* is with aiokafka (the producer's own
    flush, which Faust calls next, then waits for delivery), and raises (so no commit
    follows) if it cannot: Faust then retries the commit or re-delivers the events.

    Only those: Faust takes the offsets to commit before it flushes, and the agent puts
    an event's sends before it is acked, so later messages belong to later offsets.
    Waiting for an empty buffer instead made a commit wait as long as the agent kept
    producing (6 s and more while catching up)."""
    outbox: Outbox | None = getattr(self.app, "sessionwatch_outbox", None)
    if outbox is not None:
        await outbox.drain()  # alerts and actions (Faust's buffer has the dead letters)
    if cast(Any, self.app).conf.producer_threaded:  # not counted: Faust's own flush
        await _faust_flush(self)
        return
    progress = _progress_of(self)
    target = progress.queued
    deadline = time.monotonic() + 60.0
    while progress.handed < target:
        if self.state != "running":
            raise RuntimeError(f"producer buffer stopped, {target - progress.handed} unsent")
        self.message_sent.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.message_sent.wait(), timeout=0.1)
        if time.monotonic() > deadline:
            raise RuntimeError(f"producer buffer not drained in 60 s: {self.size} left")


_faust_put = ProducerBuffer.put
_faust_flush = ProducerBuffer.flush
_send_pending = ProducerBuffer._send_pending
ProducerBuffer.put = _put_counted  # type: ignore[method-assign]

ProducerBuffer._send_pending = _send_counted  # type: ignore[method-assign]
ProducerBuffer.flush = _drain  # type: ignore[method-assign]


async def _flush_checked(self: Any) -> None:
    """Faust's producer flush, then no commit if an alert or action was not delivered
    (the client's flush waits for deliveries, failed ones included)."""
    await _faust_producer_flush(self)
    outbox: Outbox | None = getattr(self.app, "sessionwatch_outbox", None)
    if outbox is not None:
        outbox.check()


_faust_producer_flush = AIOKafkaProducerService.flush
AIOKafkaProducerService.flush = _flush_checked  # type: ignore[method-assign]


#: Longest pause between tries to start one of Faust's Kafka clients while the broker is
#: away (the pauses double from a quarter of a second).
START_RETRY_MAX_S = 5.0


async def _start_when_reachable(service: Any, start: Callable[[], Awaitable[None]]) -> None:
    """``start()`` of one of Faust's Kafka clients, tried again while no broker answers.

    The worker's start checks reached the broker a moment before (one that cannot be
    reached at all is refused there, with the setting to fix), so a refusal here is an
    outage that began in between, as a restart of the cluster with the workers brings.
    A running worker rides an outage out; starting, it stopped with a traceback and exit
    code 1. It now waits for the broker, saying so once."""
    pause, said = 0.25, False
    while True:
        try:
            await start()
            return
        except KafkaConnectionError as exc:
            if service.should_stop:
                raise
            if not said:
                log.warning("Kafka went away as the worker started (%s); waiting for it", exc)
                said = True
        await asyncio.sleep(pause)
        pause = min(2 * pause, START_RETRY_MAX_S)


async def _producer_on_start(self: AIOKafkaProducerService) -> None:
    """Faust's producer start (``Producer.on_start``), waiting for an absent broker."""
    await super(AIOKafkaProducerService, self).on_start()
    producer = self._producer = self._new_producer()
    self.beacon.add(producer)
    await _start_when_reachable(self, producer.start)


async def _consumer_on_start(self: AIOKafkaConsumerThread) -> None:
    """Faust's consumer start (``AIOKafkaConsumerThread.on_start``), the same way."""
    consumer = self._consumer = self._create_consumer(loop=self.thread_loop)
    self.time_started = time.monotonic()
    await _start_when_reachable(self, consumer.start)


AIOKafkaProducerService.on_start = _producer_on_start  # type: ignore[method-assign]
AIOKafkaConsumerThread.on_start = _consumer_on_start  # type: ignore[method-assign]


def _ack_if_current(self: Consumer, message: Any) -> bool:
    """``Consumer.ack`` that does not count an ack given while a rebalance is under way
    or for a message of an earlier generation.

    Faust's stream *skips* such messages (fetched before the rebalance; the partition
    may have moved) and then acks them "so that lag does not grow". An ack makes the
    offset committable, so when the partition comes back to this worker, as it does
    when a worker leaves again, Faust commits past events nobody processed: a
    fail-over test lost hundreds of events per partition that way. Not counted, the
    message is re-delivered from the last commit to whoever owns its partition (and
    one already applied is recognised by its bundle's offset).
    """
    app = self.app
    generation = getattr(message, "generation_id", None)
    with ack_lock:  # Faust's: acks also come from its consumer thread
        if not app.flow_control.is_active() or (
            generation is not None and generation != app.consumer_generation_id
        ):
            message.acked = True  # as Faust would, so nothing acks it a second time
            self._unacked_messages.discard(message)
            return False
        return _faust_ack(self, message)


async def _no_gap(self: Consumer, tp: TP, offset_from: int, offset_to: int) -> None:
    """Faust counts offsets its fetch loop jumped over as done (committable), meant for
    transaction markers; but a jump also happens when a rebalance or seek leaves events
    undelivered, and then the commit passes events nobody processed. The agent reads
    every jump back itself (:mod:`detector.stream.ordering`) and marks the offsets it
    finds empty as done, so Faust's own gap tracking is off."""


def _ack_offsets(self: Consumer, tp: TP, offsets: list[int]) -> int:
    """``Consumer.ack`` for many offsets of one partition at once, with the same checks
    (flow active, acks on for the topic, not below the commit, not acked before) and the
    same bookkeeping, in one step under Faust's lock. The worker acks every event it
    applies once its state is written, tens of thousands a second while catching up: one
    by one, with an object made for each, that cost ~2 us an event. Says how many were
    counted."""
    app = self.app
    with ack_lock:
        if not offsets or not app.flow_control.is_active():
            return 0
        if not app.topics.acks_enabled_for(tp.topic):
            return 0
        committed = self._committed_offset[tp]
        if committed is not None and min(offsets) < committed:
            offsets = [offset for offset in offsets if offset >= committed]
        index = self._acked_index[tp]
        if not index.isdisjoint(offsets) or len(set(offsets)) != len(offsets):
            fresh: list[int] = []
            for offset in offsets:
                if offset not in index:
                    index.add(offset)
                    fresh.append(offset)
            offsets = fresh
        else:
            index.update(offsets)
        self._acked[tp].extend(offsets)
        self._n_acked += len(offsets)
        notify(self._waiting_for_ack)
        return len(offsets)


_faust_ack = Consumer.ack
Consumer.ack = _ack_if_current  # type: ignore[method-assign]
Consumer.ack_offsets = _ack_offsets  # type: ignore[attr-defined]
Consumer._add_gap = _no_gap  # type: ignore[method-assign]


_EVENT_WAIT = asyncio.Event.wait.__code__


async def _deliver_first(self: Consumer, *coros: Any, timeout: Any = None) -> WaitResults:
    """Faust's fetch loop delivers each message with ``wait_first(deliver(message),
    suspend_flow.wait())``, four tasks and an ``asyncio.wait`` per message, so that a
    rebalance can interrupt a delivery blocked on a full stream buffer. Almost every
    delivery does not block: this runs it to its end inline and falls back to Faust's
    ``wait_first``, the delivery going on where it stopped, only when it blocks.

    Not inline while the producer buffer is over its limit: the delivery would then
    wait for it under ``asyncio.wait_for``, which from Python 3.12 on binds its timeout
    to the task it starts in (this one, not the one the delivery goes on in)."""
    buffer = self.app.producer.buffer
    if (
        len(coros) == 2
        and timeout is None
        and getattr(coros[1], "cr_code", None) is _EVENT_WAIT
        and asyncio.iscoroutine(coros[0])
        and not (self.suspend_flow.is_set() or self._stopped.is_set() or self._crashed.is_set())
        and buffer.size <= buffer.max_messages
    ):
        deliver, suspended = coros
        try:
            first = deliver.send(None)
        except StopIteration as stop:
            suspended.close()
            return WaitResults([deliver], [stop.value], False)
        except BaseException:
            suspended.close()
            raise
        return await _service_wait_first(self, Resumed(deliver, first), suspended)
    return await _service_wait_first(self, *coros, timeout=timeout)


_service_wait_first = Consumer.wait_first
Consumer.wait_first = _deliver_first  # type: ignore[method-assign,assignment]


async def _wait_next_records_promptly(self: Consumer, timeout: float) -> Any:
    """Faust takes a partition out of the fetch while its stream's buffer is over the
    high-water mark and puts it back once the buffer drains; but a fetch already waiting
    (its timeout is 1 s) does not see it come back: it waits on for the partitions left,
    often none with data, while the agent, its buffer drained, has nothing to do. That
    was 30 % of a catch-up's time. While a partition is out, a fetch waits at most
    ``PRESSURE_POLL_S``, and the next one asks again for every partition back in."""
    if self._buffered_partitions:
        timeout = min(timeout, PRESSURE_POLL_S)
    return await _faust_wait_next_records(self, timeout)


_faust_wait_next_records = Consumer._wait_next_records
Consumer._wait_next_records = _wait_next_records_promptly  # type: ignore[method-assign]


def _create_worker_consumer(self: AIOKafkaConsumerThread, transport: Any) -> Any:
    """Faust's Kafka consumer with a fetch that waits at most ``FETCH_MAX_WAIT_MS`` for
    data, not Faust's fixed 1,500 ms. aiokafka keeps one fetch in flight per broker and
    leaves out of it partitions whose records the worker has yet to take; under load
    that can leave a fetch of only the partitions with no data (Faust's leader topic,
    always), and nothing is fetched until its wait ends. Live traffic near capacity then
    stalled for up to 1.5 s at a time, and the worker fell behind at a rate it could
    otherwise sustain (5,000 against 7,200 events/s). The cost: an idle worker fetches
    ten times a second instead of less than once."""
    consumer = _faust_create_worker_consumer(self, transport)
    consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
    return consumer


_faust_create_worker_consumer = AIOKafkaConsumerThread._create_worker_consumer
AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]


#: What the worker does with the records of one topic taken straight from a fetch
#: (per partition, in offset order) and the consumer generation they were fetched in.
DirectHandler = Callable[[dict[TP, list[Any]], int], Awaitable[None]]


async def _getmany_taking_direct(self: Consumer, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
    """Faust's ``getmany``, with the records of the app's *direct* topics (an attribute
    ``sessionwatch_direct``: topic -> handler) handed to their handler as the Kafka
    client returned them, one call per fetch, instead of one at a time through Faust's
    per-record checks, message objects, conductor, channel queue, stream and
    ``take_events`` buffer. That per-record path was half the worker's time while
    catching up (an agent doing nothing reads 0.05 x a plain consumer here); the
    handler applies a fetch's records in order per partition, as the agent did.

    Faust's checks are made per partition and fetch instead of per record: the flow is
    active (else, as in Faust, the fetch is dropped and the consumer seeks back to the
    commits), the generation has not moved, the partition is active; its end offset is
    tracked. Faust's read-offset filter is not applied: the ordering gate drops nothing
    and dedups downstream (README, Order and holes). Other topics (table changelogs in
    recovery, vendor topics in stream mode) go to the fetch loop as in Faust 0.15's
    ``getmany``, before the direct ones of the same fetch."""
    direct: dict[str, DirectHandler] | None = getattr(self.app, "sessionwatch_direct", None)
    if not direct:
        async for item in _faust_getmany(self, timeout):
            yield item
        return
    app = self.app
    records, active = await self._wait_next_records(timeout)
    generation = app.consumer_generation_id
    if records is None or self.should_stop:
        return
    if not self.flow_active:
        self.log.dev("getmany called while flow not active. Seek back to committed offsets.")
        try:
            await self.perform_seek()
        except Exception as exc:
            self.log.warning(f"exception performing seek when flow not active {exc}")
        return
    buffered = self._buffered_partitions
    taken: dict[str, dict[TP, list[Any]]] = {}
    rest: dict[TP, list[Any]] = {}
    for tp, of_tp in records.items():
        if tp.topic not in direct:
            rest[tp] = of_tp
        elif active is None or tp in active or tp in buffered:
            by_tp = taken.get(tp.topic)
            if by_tp is None:
                by_tp = taken[tp.topic] = {}
            by_tp[tp] = of_tp
    monitor = app.monitor
    if rest:
        to_message = self._to_message
        for tp, record in self.scheduler.iterate(rest):
            if not self.flow_active or app.consumer_generation_id != generation:
                return  # as Faust: the rest of the fetch is dropped
            if active is None or tp in active or tp in buffered:
                monitor.track_tp_end_offset(tp, self.highwater(tp))
                yield tp, to_message(tp, record)
    for topic, by_tp in taken.items():
        if not self.flow_active or app.consumer_generation_id != generation:
            return
        for tp in by_tp:
            monitor.track_tp_end_offset(tp, self.highwater(tp))
        await direct[topic](by_tp, generation)


_faust_getmany = Consumer.getmany
Consumer.getmany = _getmany_taking_direct  # type: ignore[method-assign]
install_fetch_decoding()  # only for the topics registered (decode_topic)


class _Fetched:
    """A record taken straight from a fetch, as the agent body sees a Faust event and
    its message (one object: ``message`` is itself): where it comes from, its value, the
    generation it was fetched in, whether it is acked."""

    __slots__ = ("acked", "generation_id", "offset", "partition", "topic", "tp", "value")

    def __init__(self, tp: TP, record: Any, generation: int) -> None:
        self.tp, self.topic, self.partition = tp, tp.topic, tp.partition
        self.offset, self.value = record.offset, record.value
        self.generation_id = generation
        self.acked = False

    @property
    def message(self) -> _Fetched:
        return self


#: Records applied between two looks at the producer buffer and the flow control, and
#: between two turns of the event loop.
DIRECT_CHUNK = 100


def direct_delivery(
    app: faust.App,
    take: Callable[[list[tuple[TP, list[Any]]], int], None],
    observe: Callable[[float], None],
) -> DirectHandler:
    """The handler of a direct topic: ``take`` (``InOrder.take_fetched``) on a fetch's
    records, in chunks of at most :data:`DIRECT_CHUNK` (runs of records of one partition
    each), holding back as Faust's conductor does before each record: while a rebalance
    suspends the flow, and while the producer buffer is over its limit (so alerts do not
    queue behind the worker's own sends). Faust's per-record sensor hook is counted per
    partition instead (the quick sensor's ``on_messages_in``)."""

    async def deliver(records_by_tp: dict[TP, list[Any]], generation: int) -> None:
        monitor = app.monitor
        if isinstance(monitor, QuickPrometheusMonitor):
            for tp, records in records_by_tp.items():
                monitor.on_messages_in(tp, len(records), records[-1].offset)
        buffer, acquire = app.producer.buffer, app.flow_control.acquire
        outbox: Outbox | None = getattr(app, "sessionwatch_outbox", None)
        for i, chunk in enumerate(_chunks(records_by_tp)):
            if i:
                # A fetch catching up holds ~20,000 records, a second's work: let the
                # producer, timers, the web server and rebalance callbacks run between
                # chunks, as Faust's fetch loop does every 100 records.
                await asyncio.sleep(0)
            await acquire()
            if buffer.size > buffer.max_messages:
                await buffer.wait_until_ebb()
            if outbox is not None and outbox.backlog > buffer.max_messages:
                await outbox.drain()
            started = time.perf_counter()
            take(chunk, generation)
            observe(time.perf_counter() - started)

    return deliver


def _chunks(records_by_tp: dict[TP, list[Any]]) -> Iterator[list[tuple[TP, list[Any]]]]:
    """A fetch's records, :data:`DIRECT_CHUNK` at a time, each chunk as runs of one
    partition. Live traffic fetches a few records per partition: one chunk (one
    checkpoint, one turn of the event loop) for all of them, not one per partition."""
    chunk: list[tuple[TP, list[Any]]] = []
    room = DIRECT_CHUNK
    for tp, records in records_by_tp.items():
        start = 0
        while start < len(records):
            run = records[start : start + room]
            chunk.append((tp, run))
            start += len(run)
            room -= len(run)
            if not room:
                yield chunk
                chunk, room = [], DIRECT_CHUNK
    if chunk:
        yield chunk


class _HoldBackNotice(logging.Filter):
    """Faust logs a warning and an info line each time its producer buffer holds
    deliveries back: normal flow control, hundreds of times a minute while catching up
    (consumer lag shows the same), so they are logged only at DEBUG."""

    _TEXTS = ("producer buffer full size", "producer flush took")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith(self._TEXTS):
            if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
                return False
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


logging.getLogger("faust.transport.producer").addFilter(_HoldBackNotice())


def client_position(consumer: Any, tp: TP) -> int | None:
    """Where the Kafka client stands in ``tp``: the offset after the last record it handed
    to Faust (records it fetched and still buffers come after). None if it has no position
    yet or the client cannot be seen (Faust's aiokafka driver keeps it private)."""
    try:
        client = consumer._thread._consumer
        state = client._subscription.subscription.assignment.state_value(tp)
    except AttributeError:
        return None
    if state is None or not state.has_valid_position:
        return None
    return int(state.position)


class _At(NamedTuple):
    """Where a record read back by a hole fill comes from (a Faust message's fields)."""

    topic: str
    partition: int
    offset: int

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)


#: Between events, the re-index after a rebalance (BundleStore.scan_some) reads this many
#: entries every RESCAN_EVERY_S (a few milliseconds each time): ~10,000 entries a second
#: when the stream is quiet, besides the few each event reads.
SCAN_PER_TICK = 512
RESCAN_EVERY_S = 0.05

#: Younger collections between two full ones (Python's default: 10).
FULL_COLLECTION_EVERY = 100


async def freeze_startup_objects() -> None:
    """Takes what exists once the worker has started (modules, Faust's services: ~130,000
    objects) out of the garbage collector's view for good. Each full collection walked
    them all, ~50-100 ms about once a second while catching up, with every alert waiting
    behind it (p99 at 6,600 events/s, 300,000 events, two runs each: 49-59 ms against
    41-46 ms frozen). Raising the youngest generation's threshold instead made it worse
    (78-144 ms): fewer collections, each longer.

    Frozen objects no longer count as long-lived, so Python's rule that holds a full
    collection back until a quarter more objects have survived no longer does: one ran
    after every ten younger ones, about once a second catching up, walking the records in
    flight (the Kafka client's of the fetch, ~100,000 objects): 40-90 ms each, 7 % of the
    worker's time. Those are not garbage and cost the same whenever walked, so full
    collections are made ten times rarer; the young ones, where cyclic garbage is found,
    are unchanged."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


def _send_dead_letter(
    dlq_topic: Any, fingerprint: Fingerprinter, invalid: InvalidEvent, raw: bytes, msg: Any
) -> DeadLetter:
    """Dead-letters a refused record of ``msg`` (its topic/partition and offset)."""
    letter = dead_letter(invalid, raw, f"{msg.topic}/{msg.partition}", msg.offset, fingerprint)
    dlq_topic.send_soon(value=_json.encode(letter))
    return letter


def action_record(alert: Alert) -> dict[str, Any]:
    """The SPEC.md §6 action message for an enforce-mode alert."""
    return {
        "action": alert.action,
        "session": alert.session,
        "user": alert.user,
        "alert_id": alert.alert_id,
        "ts": alert.ts,
    }


class InOrder:
    """One agent's events, applied in offset order per partition, holes read back.

    See :mod:`detector.stream.ordering`. ``apply(raw, at, token)`` applies one record
    (``at`` has the record's topic, partition and offset; ``token``, handed to the
    state's writes, is the partition: a Kafka record there would be kept alive, and
    walked by every full garbage collection, for each bundle not written yet);
    ``done(full, paced)`` writes state at each checkpoint and says, per partition, the
    oldest offset whose effects are not yet durable; records before it are then acked.
    ``new_generation()`` runs after a rebalance. Checkpoints roll: after each batch or
    fill, ``done`` writes what is due (the agent's: state first changed the checkpoint
    interval ago, in a share of the time), so writes spread evenly rather than in bursts
    that would hold alerts back; from a timer when the input is idle, everything
    changed (``unwritten()``: how many changed entries are left). No await between the
    writes and the acks.
    """

    def __init__(
        self,
        app: faust.App,
        settings: StreamSettings,
        metrics: Metrics,
        apply: Callable[[bytes, Any, Any], None],
        done: Callable[[bool, bool], dict[int, int]],
        new_generation: Callable[[], None] = lambda: None,
        *,
        topic: str,
        apply_run: Callable[[list[Any], Any], None] | None = None,
        unwritten: Callable[[], int] = lambda: 0,
    ) -> None:
        self.app = app
        self.topic = topic
        self.unwritten = unwritten
        self.apply_run = apply_run if apply_run is not None else self._apply_each
        self.read_back = fetch_range
        # Per partition: (generation, expected offset, end offset) when last seen behind.
        self._behind: dict[int, tuple[int, int | None, int]] = {}
        self._reread: dict[int, tuple[int, int | None, int]] = {}
        self.settings = settings
        self.metrics = metrics
        self.apply = apply
        self.done = done
        self.new_generation = new_generation
        self.gate = OffsetGate()
        self.fills: dict[int, asyncio.Task[None]] = {}
        self.generation = -1
        self.revocations = 0  # Faust's rebalance count when this generation began
        # Per partition, offsets applied (or found empty) but not acked yet: acked, in
        # offset order, once ``done()`` has written the state they changed.
        self.unacked: dict[int, list[int]] = {}
        self.n_unacked = 0
        # Records applied since the last full checkpoint: records whose state is written
        # stay unacked until its delivery, and must not make every checkpoint until then
        # a full one.
        self.since_full = 0
        self.batch_since_tick = False  # a batch came since the timer's last tick

    def take(self, batch: list[Any]) -> None:
        """The agent body: one batch from ``take_events`` (``stream`` delivery; the
        default, ``fetch``, goes through :meth:`take_fetched`, whose common case is
        inlined)."""
        self.see_generation()
        generation = self.generation
        # Faust moves the generation only at the assignment: between a revocation (which
        # counts a rebalance) and then, a batch would still look current while its
        # partitions may already be restoring on another worker.
        revoked = self.app.rebalancing_count != self.revocations
        for event in batch:
            msg = event.message
            if revoked or msg.generation_id != generation:
                # Taken before a rebalance: its partition may belong to another worker
                # now, and Kafka re-delivers it from the commit to whoever owns it. Not
                # acked either (take_events would), or the commit could step over it.
                msg.acked = True
                continue
            self._admit(event)
        self.after_batch()

    def take_fetched(self, chunk: list[tuple[TP, list[Any]]], generation: int) -> None:
        """The agent body for records straight from a fetch (:func:`direct_delivery`):
        as :meth:`take`, on runs of Kafka client records of one partition each, fetched
        in ``generation``. Each record is its own location; it is wrapped as
        an event only when it cannot apply in line (held behind a hole, re-delivered,
        first of a generation), for :meth:`_admit` and the gate to keep."""
        self.see_generation()
        if generation != self.generation or self.app.rebalancing_count != self.revocations:
            self.after_batch()  # taken before a rebalance: see take()
            return
        next_in_line, apply, unacked = self.gate.next_in_line, self.apply, self.unacked
        next_run, apply_run = self.gate.next_run, self.apply_run
        applied = 0
        try:
            for tp, records in chunk:
                partition = tp.partition
                held = unacked.get(partition)
                if held is None:
                    held = unacked[partition] = []
                offsets = [record.offset for record in records]
                if next_run(partition, offsets[0], offsets[-1], len(offsets)):
                    apply_run(records, partition)
                    held.extend(offsets)
                    applied += len(offsets)
                    continue
                for record, offset in zip(records, offsets, strict=True):
                    if next_in_line(partition, offset):
                        apply(record.value, record, partition)
                        held.append(offset)
                        applied += 1
                    else:
                        self._admit(_Fetched(tp, record, generation))
        finally:
            self.n_unacked += applied
            self.since_full += applied
        self.after_batch()

    def _apply_each(self, records: list[Any], token: Any) -> None:
        """``apply_run`` when none is given: ``apply`` on each record."""
        apply = self.apply
        for record in records:
            apply(record.value, record, token)

    def see_generation(self) -> None:
        """Starts over when the consumer's generation moved (a rebalance completed)."""
        generation = self.app.consumer_generation_id
        if generation != self.generation:
            self.generation = generation
            self.revocations = self.app.rebalancing_count
            self.stop_fills()
            self.gate.reset()
            self._drop_unacked()  # their partitions start again from the commit
            self.new_generation()

    def stop_fills(self) -> None:
        """Cancels the read-backs under way: their holes' events stay unacked, so the
        partition's next owner (or this worker's next start) reads them from the commit.
        At a stop, a read-back that finished after Faust had stopped its producer applied
        events whose alerts could not be sent, and the stop then hung."""
        for task in self.fills.values():
            task.cancel()
        self.fills.clear()

    def _hold_ack(self, partition: int, offset: int) -> None:
        """Keeps ``offset`` unacked until its state is written (its Faust message, if
        any, is marked acked, so that take_events does not ack it either)."""
        held = self.unacked.get(partition)
        if held is None:
            held = self.unacked[partition] = []
        held.append(offset)
        self.n_unacked += 1
        self.since_full += 1

    def _drop_unacked(self) -> None:
        """Forgets every held offset, not counted: re-delivered from the commit."""
        self.unacked.clear()
        self.n_unacked = 0

    def after_batch(self) -> None:
        """A rolling checkpoint after each batch; a full one when too much waits (not
        merely after every so many records: a full write every few seconds is a burst
        that holds alerts back)."""
        self.batch_since_tick = True
        self.checkpoint(full=self.n_unacked >= MAX_UNACKED and self.since_full >= MAX_UNACKED // 4)

    def checkpoint(self, full: bool = False, paced: bool = True) -> None:
        """Writes state (``done(full, paced)``: all of it, or what is due; ``paced`` while
        records come, whose alerts the writes must not hold back), then acks every
        record before the oldest change not yet durable in its partition (unwritten, or
        written with its changelog not yet delivered), so the next commit passes only
        offsets whose effects are in the table and its changelog. Nothing is written
        once a rebalance has begun: the partitions may be restoring elsewhere, and
        their events come again from the commit to whoever owns them
        (``new_generation()`` forgets the unwritten state). No await between the writes
        and the acks."""
        app = self.app
        if app.consumer_generation_id != self.generation or (
            app.rebalancing_count != self.revocations
        ):
            self._drop_unacked()
            return
        unwritten = self.done(full, paced)
        if full:
            self.since_full = 0
        ack_offsets: Callable[[TP, list[int]], int] = app.consumer.ack_offsets  # type: ignore[attr-defined]
        for partition, held in self.unacked.items():
            limit = unwritten.get(partition)
            if limit is None:
                cut = len(held)
            else:  # offsets are held in the order applied: up to the first still unwritten
                cut = next((i for i, offset in enumerate(held) if offset >= limit), len(held))
            if cut:
                ack_offsets(TP(self.topic, partition), held[:cut])
                del held[:cut]
                self.n_unacked -= cut

    def behind(self) -> dict[int, int]:
        """Per partition of the topic assigned here, the records up to the end offset the
        consumer last saw that are not applied yet. Unlike end minus committed offset it
        does not count records applied and waiting for their checkpoint (seconds of
        events, catching up or not). Read at scrape time."""
        consumer = self.app.consumer
        try:
            assigned = list(consumer.assignment())
        except ConsumerNotStarted:
            return {}
        current = self.app.consumer_generation_id == self.generation
        found: dict[int, int] = {}
        for tp in assigned:
            if tp.topic != self.topic:
                continue
            end = consumer.highwater(tp)
            done = self._next_to_apply(tp, current)
            if end is not None and done is not None:
                found[tp.partition] = max(end - done, 0)
        return found

    def assigned(self) -> int:
        """How many partitions of the topic the group gave this worker (read at scrape
        time; none while the consumer is not started or between revocation and
        assignment)."""
        try:
            return sum(tp.topic == self.topic for tp in self.app.consumer.assignment())
        except ConsumerNotStarted:
            return 0

    def _next_to_apply(self, tp: TP, current: bool) -> int | None:
        """The next offset of ``tp`` to apply: the gate's once this generation (``current``)
        has had a batch, else the committed offset (None if unknown)."""
        expected = self.gate.expected(tp.partition) if current else None
        if expected is not None:
            return expected
        return cast(int | None, self.app.consumer._committed_offset.get(tp))  # type: ignore[attr-defined]

    async def checkpoint_when_idle(self) -> None:
        """The timer's rolling checkpoint, for when no batch comes to trigger one. With
        no batch since its last tick nothing waits, so it writes everything changed,
        due or not, a slice per step of the event loop until none is left or a batch
        comes (then that batch's checkpoints take over). A catch-up's last seconds of
        changes, thousands of bundles, are then written before live records come instead
        of falling due together among them (or taking a paced write per tick, and their
        commit minutes)."""
        paced, self.batch_since_tick = self.batch_since_tick, False
        while self.n_unacked:
            self.checkpoint(paced=paced)
            if paced or not self.unwritten():
                return
            await asyncio.sleep(0)  # what came meanwhile (a fetch's records) goes first
            if self.batch_since_tick:
                return

    def _admit(self, event: Any) -> bool:
        """Applies, holds or opens a hole; False once the event is held."""
        msg = event.message
        committed = self.app.consumer._committed_offset.get(msg.tp)  # type: ignore[attr-defined]
        verdict = self.gate.admit(msg.partition, msg.offset, event, committed)
        if verdict is Verdict.APPLY:
            self.apply(event.value, msg, msg.partition)
            msg.acked = True
            self._hold_ack(msg.partition, msg.offset)
            return True
        msg.acked = True  # held: take_events must not ack it
        if verdict is Verdict.FILL:
            hole = self.gate.hole(msg.partition)
            assert hole is not None
            log.debug(
                "offsets %s..%s of %s/%s not delivered; reading them back",
                "commit" if hole.start is None else hole.start,
                hole.end - 1,
                msg.topic,
                msg.partition,
            )
            if hole.start is not None:  # an unknown start is routine, not a hole
                self.metrics.delivery_holes = (self.metrics.delivery_holes or 0) + 1
            self.fills[msg.partition] = asyncio.ensure_future(self._fill(hole, msg.topic))
        return False

    async def watch(self) -> None:
        """Has Faust read a partition again when its events stopped coming (see
        :mod:`detector.stream.ordering`): the end offset ahead of what was applied, no
        progress over a whole watch interval, nothing of it left in the Kafka client,
        while no rebalance or read-back runs."""
        try:
            await self._watch()
        except Exception as exc:  # the broker will be back; a timer must not die
            log.warning("watching %s failed (%s); next try in %s s", self.topic, exc, WATCH_EVERY_S)

    async def _watch(self) -> None:
        app, consumer = self.app, self.app.consumer
        generation = app.consumer_generation_id
        if app.rebalancing or not app.flow_control.is_active():
            self._behind.clear()
            return
        current = generation == self.generation  # else no batch yet in this generation
        for tp in list(consumer.assignment()):
            p = tp.partition
            if tp.topic != self.topic or (current and self.gate.hole(p) is not None):
                continue
            end = consumer.highwater(tp)
            expected = self.gate.expected(p) if current else None
            done = self._next_to_apply(tp, current)
            if end is None or (done is not None and done >= end):
                self._behind.pop(p, None)
                continue
            position = client_position(consumer, tp)
            if position is not None and position < end:
                # The client has yet to hand Faust the rest: it will. Under a backlog it
                # drains one partition's fetch at a time, and a partition can wait its
                # turn longer than a watch interval; a seek would throw its fetch away.
                self._behind.pop(p, None)
                continue
            seen = (generation, expected, end)
            if self._behind.get(p) != seen:
                self._behind[p] = seen  # behind, maybe only busy: look again next time
                continue
            if self._reread.get(p) == seen:
                continue  # asked already; the events are on their way
            if expected is not None and await self._only_markers(tp, expected, end, generation):
                self._reread[p] = seen
                continue
            start = done
            if start is None:
                start = await resume_offset(self.settings, tp.topic, p)
                if app.consumer_generation_id != generation or app.rebalancing:
                    return
            if start >= end:
                continue
            log.warning(
                "%s/%s: offsets %s..%s fetched but not delivered; reading them again",
                tp.topic,
                p,
                start,
                end - 1,
            )
            self.metrics.delivery_holes = (self.metrics.delivery_holes or 0) + 1
            await consumer.seek(tp, start)
            self._reread[p] = seen

    async def _only_markers(self, tp: TP, start: int, end: int, generation: int) -> bool:
        """True if ``start``..``end - 1`` of ``tp`` hold no record (a transactional
        producer's last commit marker, say): then they are marked done, for the commit
        to pass them, and there is nothing to deliver. Only a few offsets are read: a
        backlog answers False at its first record."""
        if end - start > MARKERS_PROBE:
            return False
        _, records = await self.read_back(self.settings, tp.topic, tp.partition, start, end)
        if records:
            return False
        if (
            self.app.consumer_generation_id != generation
            or self.app.rebalancing
            or self.gate.expected(tp.partition) != start
            or self.gate.hole(tp.partition) is not None
        ):
            return True  # moved on meanwhile; the next watch looks again
        for offset in range(start, end):
            self._hold_ack(tp.partition, offset)
        self.gate.passed(tp.partition, end)
        self.after_batch()
        return True

    async def _fill(self, hole: Hole, topic: str) -> None:
        """Reads a hole's records back from Kafka, applies them, then what it held."""
        generation = self.generation
        while True:
            try:
                start, records = await self.read_back(
                    self.settings, topic, hole.partition, hole.start, hole.end
                )
                break
            except Exception as exc:  # the broker will be back; the events stay held
                log.warning("reading %s/%s failed (%s); retrying", topic, hole.partition, exc)
                await asyncio.sleep(1.0)
        if (
            self.app.consumer_generation_id != generation  # a rebalance, no batch since
            or self.app.rebalancing_count != self.revocations  # one under way (see take)
            or self.generation != generation
            or self.gate.hole(hole.partition) != hole
        ):
            return  # the partition may have moved: its owner starts from the commit
        # From here to the end: no await.
        del self.fills[hole.partition]
        held = self.gate.filled(hole, len(records))
        # Offsets with no record (transaction markers, compaction) are done too, or the
        # commit could never pass them (Faust's own gap tracking is switched off); all
        # in offset order, as Faust commits only a run of acked offsets.
        present = dict(records)
        for offset in range(start, hole.end):  # fetch_range keeps records in start..end
            at = _At(topic, hole.partition, offset)
            if offset in present:
                self.apply(present[offset] or b"", at, hole.partition)
            self._hold_ack(hole.partition, offset)
        self.metrics.records_read_back += len(records)
        # No record at all: commit markers of a transactional producer, or a generation
        # starting where expected, nothing unusual. Records: the stream framework skipped
        # them (see detector.stream.ordering).
        log.log(
            logging.WARNING if records else logging.DEBUG,
            "%s/%s: offsets %s..%s were not delivered; %d records read back and applied",
            topic,
            hole.partition,
            start,
            hole.end - 1,
            len(records),
        )
        for i, event in enumerate(held):
            if not self._admit(event):
                # A second hole among the held events: the rest waits behind it.
                for later in held[i + 1 :]:
                    self._admit(later)
                break
        self.after_batch()


def between_events(app: Any, in_order: InOrder, store: BundleStore, events_topic: str) -> None:
    """The worker's timer, between events: starts a generation that has brought no event
    yet, as its first batch would, and goes on with the re-index.

    Not while partitions move: a scan reads the partitions this worker holds, recovered.
    A quiet stream's recovered state is counted and swept this way; and a worker left
    without any ``events_topic`` partition (more workers than partitions) forgets its
    state and census, which other workers now report, instead of reporting them too."""
    if app.rebalancing:
        return
    if in_order.generation != app.consumer_generation_id:
        in_order.see_generation()
        if any(tp.topic == events_topic for tp in app.consumer.assignment()):
            store.begin_scan()
    if store.scanning and in_order.generation == app.consumer_generation_id:
        store.scan_some(SCAN_PER_TICK)


def create_app(settings: StreamSettings, policy: Policy) -> faust.App:
    """Builds the app; nothing connects until a worker starts it."""
    hold_back_repeats("aiokafka")  # a broker outage is otherwise ~75 ERROR lines a second
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.bootstrap_servers}",
        broker_credentials=_broker_credentials(settings),
        store=settings.store,
        datadir=settings.data_dir,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_bind=settings.web_bind or settings.web_host,
        table_cleanup_interval=3600.0,
        # No standbys: a sweep must only ever delete state of partitions this worker owns.
        table_standby_replicas=0,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,
        producer_linger=PRODUCER_LINGER_S,
        producer_partitioner=KeyPartitioner(),  # alerts and actions by session, hashed natively
        consumer_metadata_max_age_ms=int(METADATA_MAX_AGE_S * 1000),
        broker_session_timeout=settings.failover_seconds,
        broker_heartbeat_interval=heartbeat_seconds(settings.failover_seconds),
        # The worker's start checks make Faust's topics (changelog, leader) before Faust
        # starts (clients.prepare_worker). Faust's own creation of them was one more
        # request at its start that stopped the worker when the broker went away then.
        topic_allow_declare=False,
    )
    # Faust's producer buffer holds deliveries back from 100 messages on; that limit is
    # kept. Raised to 4 x batch_size, the agent ran ahead of its own sends, so near
    # capacity alerts waited in the buffer (A/B at 1,800 events/s: p99 110-594 ms against
    # 41-88 ms; at 1,700 two of three runs fell behind against none), for ~12 % more
    # catch-up speed. Its notice of each hold-back is quietened (_HoldBackNotice).
    events_topic = app.topic(
        settings.events_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )
    alerts_topic = app.topic(
        settings.alerts_topic,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )
    actions_topic = app.topic(
        settings.actions_topic,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )
    dlq_topic = app.topic(
        settings.dlq_topic, key_serializer="raw", value_serializer="raw", partitions=1
    )
    table = app.Table(
        "state",
        key_type=bytes,  # bytes keys and values: the "raw" codec, we encode ourselves
        value_type=bytes,
        partitions=settings.partitions,
        # Changelog partition = the event's partition (ChangelogIO writes by partition). Not
        # use_partitioner: with RocksDB it lost state on rebalance in our scale-out test.
        use_partitioner=False,
    )
    fingerprint = Fingerprinter.from_env(policy.fingerprint_key_env)
    engine = Engine(policy, fingerprint, sweep_every_s=60.0)

    def committed(partition: int) -> int | None:
        offsets = app.consumer._committed_offset  # type: ignore[attr-defined]
        return cast(int | None, offsets.get(TP(settings.events_topic, partition)))

    state_io = ChangelogIO(app, table)
    store = BundleStore(
        table,
        engine.session_expiry,
        engine.user_expiry,
        sweep_every_s=STREAM_SWEEP_EVERY_S,
        committed=committed,
        io=state_io,
        active_until=engine.active_until,
        active_terms=engine.active_terms(),
    )
    engine.store = store
    install_api(app, settings.api_token, store, events_topic, engine, settings.partitions)

    def committed_offsets_to_faust_gauge() -> None:
        # Faust 0.15 defines faust_topic_partition_offset_commited but never sets it
        # (nothing calls Monitor.on_tp_commit): fill it at scrape time, so that consumer
        # lag = end offset - committed offset works from Faust's own metrics.
        gauge = app.monitor._metrics.topic_partition_offset_commited  # type: ignore[attr-defined]
        for tp, offset in list(app.consumer._committed_offset.items()):  # type: ignore[attr-defined]
            if offset is not None:
                gauge.labels(topic=tp.topic, partition=tp.partition).set(offset)

    # Routine transactions and plain logins take the compiled path (native/) when it is
    # built: the same state changes, without the interpreter. It counts them itself; the
    # counts join the metrics at every checkpoint and scrape (fold_native_counts).
    native = bundle_path(engine, LAG_BUCKETS)

    def before_scrape() -> None:
        fold_native_counts()
        committed_offsets_to_faust_gauge()

    # The census is the store's tally (microseconds), so every scrape reads it afresh.
    metrics = Metrics(census=engine.census, census_ttl_s=0.0, before_collect=before_scrape)
    metrics.delivery_holes = 0
    # One registry per app: ours first, then Faust's own sensor; served together on
    # /metrics. Faust's names get the fixed prefix "faust_" whatever the app id.
    setup_prometheus_sensors(app, registry=registry_with(metrics), name_prefix="faust")
    install_quick_sensor(app)
    app.task(freeze_startup_objects)
    app.sessionwatch = {  # type: ignore[attr-defined]
        "engine": engine,
        "store": store,
        "table": table,
        "metrics": metrics,
    }

    @app.agent(events_topic, concurrency=1)
    async def detect(stream: Any) -> None:  # faust.Stream; StreamT lacks take_events
        async for batch in stream.take_events(settings.batch_size, within=0.01):
            # No ``await`` in this body, on purpose: an event's alerts are put into
            # Faust's producer buffer (send_soon, flushed before every commit) in the
            # same step that applies it. Events are acked only at the checkpoint that
            # writes their state (InOrder.checkpoint); each one is marked so that
            # take_events, which acks a batch when the body ends *or is cancelled*,
            # does not.
            started = time.perf_counter()
            in_order.take(batch)
            metrics.processing.observe(time.perf_counter() - started)

    def processing_failed(exc: Exception, raw: bytes, msg: Any) -> None:
        # The exception's message may quote event data (a session ID): log its type
        # and where it was raised, never its text.
        where = "".join(traceback.format_tb(exc.__traceback__, limit=-3))
        log.error(
            "engine failed (%s) at %s/%s:%s; dead-lettered\n%s",
            type(exc).__name__,
            msg.topic,
            msg.partition,
            msg.offset,
            where,
        )
        invalid = InvalidEvent("processing_error", type(exc).__name__)
        _send_dead_letter(dlq_topic, fingerprint, invalid, raw, msg)
        metrics.count_invalid("processing_error")

    send: Callable[[str, bytes, bytes], None]
    if app.conf.producer_threaded:  # the client producer is another thread's: Faust's buffer
        topics = {settings.alerts_topic: alerts_topic, settings.actions_topic: actions_topic}

        def send(topic: str, key: bytes, value: bytes) -> None:
            topics[topic].send_soon(key=key, value=value)

    else:
        client = cast(Any, app.producer)._ensure_producer
        outbox = Outbox(client, app.monitor, app.crash)
        app.sessionwatch_outbox = outbox  # type: ignore[attr-defined]
        send = outbox.send

    alerts_name, actions_name = settings.alerts_topic, settings.actions_topic

    def publish(alert: Alert, value: bytes) -> None:
        key = alert.session.encode()
        send(alerts_name, key, value)
        if alert.mode == "enforce" and alert.action != "none":
            send(actions_name, key, _json.encode(action_record(alert)))

    def refuse(invalid: InvalidEvent, raw: bytes, msg: Any) -> None:
        letter = _send_dead_letter(dlq_topic, fingerprint, invalid, raw, msg)
        log.warning(
            "dead-lettered %s at %s:%s", letter.reason.split(":")[0], letter.source, letter.offset
        )

    apply_one, fold_native_counts, apply_run = record_applier(
        engine, store, metrics, publish, refuse, processing_failed, native
    )

    def new_generation() -> None:
        store.discard()  # not written: the events behind it come again from the commit
        store.reset()  # partitions moved: re-index what this worker now holds

    budget = WriteBudget(
        ROLLING_WRITES_SHARE,
        ROLLING_WRITES_LEAST_S,
        ROLLING_WRITES_MOST_S,
        behind_share=ROLLING_WRITES_BEHIND_SHARE,
    )

    def behind() -> bool:
        oldest = store.oldest_change()
        return oldest is not None and (time.monotonic() - oldest > 2 * settings.checkpoint_seconds)

    def write_state(full: bool, paced: bool) -> dict[int, int]:
        # One write per bundle changed, under its last event (hence its partition); an
        # interval of 0 makes everything due, so it is all written after every batch.
        if full or not settings.checkpoint_seconds:
            store.flush()
        elif not paced:  # nothing waits: everything changed, due or not, a slice
            store.flush(within=IDLE_WRITES_SLICE_S)
        elif (within := budget.grant(behind())) is not None:
            store.flush(settings.checkpoint_seconds, within=within)
            budget.spent()
        fold_native_counts()
        metrics.sessions_shed = store.shed
        return store.unwritten_from()

    in_order = InOrder(
        app,
        settings,
        metrics,
        apply_one,
        write_state,
        new_generation,
        topic=settings.events_topic,
        apply_run=apply_run,
        unwritten=lambda: store.unwritten,
    )
    # Records of the events topic go from the fetch to the agent body directly (see
    # _getmany_taking_direct); the agent's stream, subscribed all the same, then idles.
    direct: dict[str, DirectHandler] = {}
    decode_topic(settings.events_topic, settings.decode == "native")
    if settings.delivery == "fetch":
        direct[settings.events_topic] = direct_delivery(
            app, in_order.take_fetched, metrics.processing.observe
        )
    metrics.records_behind = in_order.behind
    metrics.partitions = lambda: (in_order.assigned(), settings.partitions)
    app.sessionwatch_direct = direct  # type: ignore[attr-defined]
    app.timer(WATCH_EVERY_S)(in_order.watch)
    app.timer(0.5, name="checkpoint")(in_order.checkpoint_when_idle)

    async def rescan() -> None:
        between_events(app, in_order, store, settings.events_topic)

    app.timer(RESCAN_EVERY_S, name="rescan")(rescan)
    faust_stop_consumer = app._stop_consumer

    async def stop_consumer() -> None:
        # A clean stop writes what changed since the last checkpoint first (Faust then
        # revokes the tables and makes its last commit), so a restart does not read
        # those events again and send their alerts a second time.
        in_order.stop_fills()
        in_order.checkpoint(full=True)
        await state_io.drain()
        in_order.checkpoint()  # acks what the first one wrote, now delivered
        await faust_stop_consumer()

    app._stop_consumer = stop_consumer  # type: ignore[method-assign]

    app.on_partitions_assigned.connect(partitions_past(settings))

    for topic_name, fmt in settings.vendor_inputs():
        install_normalizer(
            app, settings, topic_name, fmt, events_topic, dlq_topic, fingerprint, metrics, direct
        )
    return app


#: Longest wait at an assignment for the cluster's partition count of the input topic.
PARTITION_COUNT_TIMEOUT_S = 5.0


def partitions_past(settings: StreamSettings) -> Callable[..., Awaitable[None]]:
    """A receiver of Faust's assignments that stops the worker at once (exit 2) when the
    input topic has gained partitions while it ran: when it is assigned one past its
    configured count, or the cluster gives the topic more (partitions added at once
    rebalance every worker of the group). The state's changelog has only the configured
    count, and a key's partition is its hash modulo the count, so keys move, to the new
    partitions and (unless the count grew by a multiple) between the old ones, where
    none of their state is: the worker used to detect on without it (false alerts) until
    a state write in a new partition stopped it with Faust's "Unrecognized partition". A
    restart is then refused by the start check, which says what to do. Nothing is
    committed (as with ``kill -9``): the next worker reads those events again."""

    async def check(sender: Any, assigned: set[TP], **_: Any) -> None:
        past = sorted(
            tp.partition
            for tp in assigned
            if tp.topic == settings.events_topic and tp.partition >= settings.partitions
        )
        count: int | None = None
        if not past:
            try:
                count = await asyncio.wait_for(
                    partition_count(settings, settings.events_topic), PARTITION_COUNT_TIMEOUT_S
                )
            except Exception as exc:  # the broker away: the assignment's own check stands
                log.warning("the input topic's partition count could not be read: %r", exc)
        if past or (count is not None and count > settings.partitions):
            held = f"assigned {', '.join(map(str, past))}" if past else f"it has {count}"
            message = (
                f"sessionwatch: the input topic {settings.events_topic!r} has gained "
                f"partitions while the worker ran ({held}; the worker and its state "
                f"changelog have {settings.partitions}): keys have moved to partitions "
                "that hold none of their state, so the worker stops here without "
                "committing. A topic's partitions cannot be reduced: start the workers "
                "under a new SESSIONWATCH_APP_ID with SESSIONWATCH_PARTITIONS set to the "
                "new count (state is rebuilt from what the input still holds)\n"
            )
            os.write(2, message.encode())
            os._exit(2)

    return check


def install_normalizer(
    app: faust.App,
    settings: StreamSettings,
    topic_name: str,
    fmt: str,
    events_topic: Any,
    dlq_topic: Any,
    fingerprint: Fingerprinter,
    metrics: Metrics,
    direct: dict[str, DirectHandler],
) -> None:
    """An agent that maps a vendor topic onto session-events, keyed by routing key.

    Shippers key vendor logs by whatever they like (often nothing), so detection cannot
    read them in place: a user's events must share a partition. Mapped events are
    validated here; refused records go to the DLQ naming the vendor topic and offset,
    and records of unmapped types are skipped (not dead-lettered).
    """
    from detector.adapters import ADAPTERS

    convert = ADAPTERS[fmt]
    source = app.topic(
        topic_name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )

    def refuse(invalid: InvalidEvent, raw: bytes, msg: Any) -> None:
        _send_dead_letter(dlq_topic, fingerprint, invalid, raw, msg)

    def normalize_one(raw: bytes | None, at: Any, token: Any) -> None:
        if raw is None:  # a tombstone
            refuse(NO_VALUE, b"", at)
            return
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            refuse(InvalidEvent("not_json", "vendor record is not JSON"), raw, at)
            return
        items = record if isinstance(record, list) else [record]
        for item in items:
            mapped = convert(item) if isinstance(item, dict) else None
            if mapped is None:  # a type with no meaning for sessions
                metrics.unmapped[fmt] = metrics.unmapped.get(fmt, 0) + 1
                continue
            line = orjson.dumps(mapped)
            ev = decode(line)
            if type(ev) is not Event:
                assert isinstance(ev, InvalidEvent)
                refuse(ev, line, at)
                continue
            key = routing_key(ev, fingerprint).encode()
            events_topic.send_soon(key=key, value=line)

    # In order and without holes, as detection (a skipped vendor record is a lost event).
    in_order = InOrder(
        app, settings, metrics, normalize_one, lambda full, paced: {}, topic=topic_name
    )
    decode_topic(topic_name, settings.decode == "native")
    app.timer(WATCH_EVERY_S, name=f"watch-{topic_name}")(in_order.watch)
    if settings.delivery == "fetch":
        direct[topic_name] = direct_delivery(app, in_order.take_fetched, lambda seconds: None)

    @app.agent(source, name=f"normalize-{topic_name}", concurrency=1)
    async def normalize(stream: Any) -> None:
        async for batch in stream.take_events(settings.batch_size, within=0.01):
            in_order.take(batch)  # no await: see detect()
