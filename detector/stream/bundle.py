"""State per routing key, as one Faust table entry, behind the engine's store interface.

Keeping a user's account state and all their sessions in one value keyed by the
routing key makes every table write co-partitioned with the event that causes
it, whichever partition the worker is processing: that is what lets the agent
batch events safely and what makes recovery and rebalancing exact.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from functools import partial
from itertools import islice
from typing import Any, Protocol

import msgspec

from detector.native import native_wanted
from detector.state import SessionState, UserState
from detector.store import Census, ExpiryIndex

log = logging.getLogger(__name__)

#: Alerts of this many recent events per bundle are kept for re-sending (see Bundle).
OUTBOX_EVENTS = 8

#: Largest bundle written, encoded. Kafka refuses a record over ~1 MB by default (the
#: broker's message.max.bytes, the producer's max_request_size) and Faust's producer
#: then stops the worker. One user's thousands of sessions get there: an integration
#: account that logs in for every request keeps each session for the state retention.
MAX_BUNDLE_BYTES = 900_000
#: Bundles kept decoded beyond the changed ones, written or only read: a user's next
#: event then finds its bundle without a read and decode, and the compiled path its
#: copies of the sessions still valid (they hold while the objects are the same). A
#: written one over KEEP_BYTES encoded goes at once (the simulated day's p99 is 1.8 KB),
#: so that accounts with thousands of sessions do not fill memory with them.
KEEP_READ = 16_384
KEEP_BYTES = 8_192
#: A bundle over the limit is cut to this share of it, so the next writes fit too.
SHED_TO = 0.75

#: Writes a rolling flush makes before its time budget (``within``) applies: a checkpoint
#: with a few dozen due, as live traffic has, always writes them all.
WRITES_BEFORE_BUDGET = 64


class WriteBudget:
    """Time for the rolling writes made while records come: a ``share`` of the wall
    time, granted once at least ``least`` seconds have gathered and at most ``most`` at
    a time; each flush costs at least ``least``. A budget per flush did not bound the
    share: with a flush after every batch, over a hundred a second at live rates, a catch-up's
    last seconds of changes falling due together took half the worker for a second
    (p99 200-400 ms behind them); and each flush pays per partition (a RocksDB batch, a
    produce request), so fewer flushes with more writes each cost less. ``clock`` is
    ``time.monotonic``, or a test's."""

    def __init__(
        self,
        share: float,
        least: float,
        most: float,
        clock: Callable[[], float] = time.monotonic,
        behind_share: float | None = None,
    ) -> None:
        behind_share = share if behind_share is None else behind_share
        if not 0.0 < share <= behind_share <= 1.0 or not 0.0 <= least <= most:
            raise ValueError("0 < share <= behind_share <= 1, 0 <= least <= most")
        self.share, self.behind_share, self.least, self.most = share, behind_share, least, most
        self.clock = clock
        self._credit = most
        self._last = clock()

    def grant(self, behind: bool = False) -> float | None:
        """The seconds a flush may take now (then :meth:`spent` when it ends), or None
        until enough time has gathered (a flush that overran left a debt, paid first).
        ``behind``: writes are falling behind (on a slow hour, a quarter of the time may
        not keep up), so credit gathers at ``behind_share`` instead, rather than the
        changes waiting until everything is written at once (a full checkpoint)."""
        now = self.clock()
        share = self.behind_share if behind else self.share
        self._credit = min(self._credit + (now - self._last) * share, self.most)
        self._last = now
        return self._credit if self._credit >= self.least else None

    def spent(self) -> None:
        """The granted flush is over: its time since the grant (more than granted when
        its first writes overran), or ``least`` if shorter, comes off the credit, so
        that flushes come at most every ``least / share`` seconds on average and each
        has that long's due writes to make together."""
        self._credit -= max(self.clock() - self._last, self.least)


#: Due entries a partition's sweep examines per event of that partition. Examinations
#: are at most ~2 per event over time (an entry is examined once when it dies and once
#: per time its activity moved its expiry), so this keeps up; what it bounds is a mass
#: expiry, such as a worker restarted after a day down, where every entry is due at once
#: and one event would otherwise read and delete them all while alerts wait.
SWEEP_PER_EVENT = 16

#: Local entries the re-index after a rebalance reads per event (of any partition):
#: about a millisecond of work. Read all at once, a worker's million entries held the
#: event that found them for seconds.
SCAN_PER_EVENT = 128


class Bundle(msgspec.Struct, gc=False):
    """Everything one routing key owns.

    ``offset`` is the source offset of the last event applied to this bundle and
    ``outbox`` the alerts its latest alerting events raised. After a crash Kafka
    re-delivers events the changelog may already reflect; such an event is not
    applied again (that could raise alerts the first pass never saw) but its
    alerts are sent again, with the same ids, in case they were lost in flight.
    """

    user: UserState | None = None
    sessions: dict[str, SessionState] = msgspec.field(default_factory=dict)
    offset: int = -1
    outbox: tuple[tuple[int, tuple[bytes, ...]], ...] = ()  # tuples: see UserState.sessions
    partition: int = -1  # of the source topic; only that partition's events may touch it


_NEVER = -math.inf  # a partition with no sweep scheduled is due at once

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Bundle).decode
decode_bundle = _decode


class _Unwritten(msgspec.Struct, gc=False):
    """A changed bundle waiting for its write: its key, the bundle, the token of its last
    event (to write it under), since when (monotonic), and the source offset of its first
    change not yet written. Not tracked by the garbage collector, as the state."""

    key: bytes
    bundle: Bundle
    token: Any
    since: float
    first: int


class StateIO(Protocol):
    """Where bundles are read from and written to, by partition. ``get`` reads one key
    of a partition. ``put`` takes one key's new value (None: delete it) under
    ``token``, an event of ``partition``, with ``first``, the source offset of the
    oldest change it carries (None for a deletion, which no event waits for); ``end``
    closes a flush, with or without writes. ``undelivered_from()`` says, per partition,
    the oldest ``first`` put but not yet durable: records from there on must not be
    acked yet."""

    def get(self, partition: int, key: bytes) -> bytes | None: ...

    def put(
        self, partition: int, key: bytes, value: bytes | None, first: int | None, token: Any
    ) -> None: ...

    def end(self) -> None: ...

    def undelivered_from(self) -> dict[int, int]: ...

    def scan(self) -> Iterator[tuple[bytes, bytes]]:
        """Every local entry, read a few at a time as the iterator is advanced, so that
        reads and writes may come between two steps: an entry written meanwhile comes
        as it is when reached, one deleted before it is reached does not come."""
        ...


class MappingIO:
    """The table mapping itself, key by key, durable as it is written: a dict in tests,
    or a Faust table (one changelog message per key, under ``before_write(token)``'s
    current event)."""

    def __init__(
        self,
        table: MutableMapping[bytes, bytes],
        before_write: Callable[[Any], object] | None = None,
    ) -> None:
        self.table = table
        self.before_write = before_write

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self.table.get(key)

    def put(
        self, partition: int, key: bytes, value: bytes | None, first: int | None, token: Any
    ) -> None:
        if self.before_write is not None:
            self.before_write(token)
        if value is None:
            del self.table[key]
        else:
            self.table[key] = value

    def end(self) -> None:
        pass

    def undelivered_from(self) -> dict[int, int]:
        return {}

    def scan(self) -> Iterator[tuple[bytes, bytes]]:
        return scan_keys(self.table, list(self.table.keys()))


def scan_keys(table: Mapping[bytes, bytes], keys: list[bytes]) -> Iterator[tuple[bytes, bytes]]:
    """``keys`` of ``table`` (listed when the scan began) with their values when reached."""
    for key in keys:
        raw = table.get(key)
        if raw is not None:
            yield key, raw


def _forget_first(s: SessionState) -> tuple[int, float]:
    """Sort key of :meth:`BundleStore._shed`: ended sessions by end, then the rest by
    last activity."""
    return (0, s.ended_at) if s.ended is not None else (1, s.last)


#: What one entry adds to the tally: its write's number, its sessions, whether it holds a
#: user, and its sessions that were live when written, as (live until, guest). A tuple
#: of plain values, which the garbage collector stops tracking: a worker's tens of
#: thousands of them would otherwise be walked by every full collection.
_Counted = tuple[int, int, bool, tuple[tuple[float, bool], ...]]


class Tally:
    """The census of a table, kept as entries are written and deleted, so that a scrape
    does not decode the whole table on the event loop (60 ms for 30,000 entries, every
    scrape; a million, seconds: ``bench/state_scans.py``).

    A session counts as live from its entry's write until its ``active_until`` passes
    (an ended one, whose ``active_until`` is -inf, never does): a heap of those times,
    popped as the census's event time moves on, takes it off.
    Event time only moves forward (an earlier ``now`` is read as the latest seen)."""

    def __init__(self, active_until: Callable[[SessionState], float]) -> None:
        self._active_until = active_until
        self.clear()

    def clear(self) -> None:
        """Forgets every entry (partitions changed hands: they are counted again)."""
        self._of: dict[bytes, _Counted] = {}
        self._heap: list[tuple[float, int, bytes, bool]] = []
        self._generation = 0
        self._now = -math.inf
        self._live = [0, 0]  # user sessions, guest sessions: live at self._now
        self.sessions = 0
        self.users = 0

    def set(self, key: bytes, bundle: Bundle | None) -> None:
        """``key`` now holds ``bundle`` (None: deleted)."""
        old = self._of.pop(key, None)
        if old is not None:
            _, sessions, user, live = old
            self.sessions -= sessions
            self.users -= user
            for until, guest in live:
                if until >= self._now:  # not popped yet: still counted
                    self._live[guest] -= 1
        if bundle is None:
            return
        self._generation += 1
        generation = self._generation
        now_live: list[tuple[float, bool]] = []
        for session in bundle.sessions.values():
            if session.ended is not None:
                continue  # never live again (its active_until is -inf): no call
            until = self._active_until(session)
            if until >= self._now and until != -math.inf:
                now_live.append((until, session.guest))
                self._live[session.guest] += 1
                heapq.heappush(self._heap, (until, generation, key, session.guest))
        user = bundle.user is not None
        self._of[key] = (generation, len(bundle.sessions), user, tuple(now_live))
        self.sessions += len(bundle.sessions)
        self.users += user
        if len(self._heap) > 2 * sum(self._live) + 1024:
            # Mostly rewritten entries' leftovers. Here, not at the census: a worker
            # nobody scrapes would otherwise grow the heap by every write.
            self._compact()

    def _compact(self) -> None:
        """Drops the heap's leftovers: times of rewritten or deleted entries, and past
        ones. It goes over the heap, not over every entry, so one write's cost stays in
        proportion to the live sessions, not to the table (``bench/state_scans.py``)."""
        of, now = self._of, self._now
        self._heap = [
            item
            for item in self._heap
            if item[0] >= now and (counted := of.get(item[2])) is not None and counted[0] == item[1]
        ]
        heapq.heapify(self._heap)

    def census(self, now: float) -> Census:
        heap, of = self._heap, self._of
        if now > self._now:
            self._now = now
        while heap and heap[0][0] < self._now:
            _, generation, key, guest = heapq.heappop(heap)
            counted = of.get(key)
            if counted is not None and counted[0] == generation:
                self._live[guest] -= 1
        entries = {"state": len(of), "sessions": self.sessions, "users": self.users}
        return Census(self._live[0], self._live[1], entries)


class _CompiledTally(Protocol):
    """The extension's ``Tally``: :class:`Tally`'s bookkeeping with the engine's
    ``active_until`` reckoned from its policy terms (``Engine.active_terms``)."""

    def clear(self) -> None: ...
    def set(self, key: bytes, bundle: Bundle | None) -> None: ...
    def counts(self, now: float) -> tuple[int, int, int, int, int]: ...
    def heap_len(self) -> int: ...


class CompiledTally:
    """:class:`Tally` kept by the extension: the same counts (a property test compares
    the two) in about a seventh of the interpreter's time (83,211 writes profiled in
    ``bench/record_step.py``'s harness: 0.15 s against 0.97 s; 4-5 µs a write there, a
    tenth of the worker's per-record step at its checkpoints)."""

    def __init__(self, native: Any, terms: tuple[float, float, float, float, float, float]):
        self._tally: _CompiledTally = native.Tally(terms)
        self.set = self._tally.set  # the extension's method itself: no frame per write
        self.clear = self._tally.clear

    def heap_len(self) -> int:
        return self._tally.heap_len()

    def census(self, now: float) -> Census:
        users, guests, state, sessions, holders = self._tally.counts(now)
        return Census(users, guests, {"state": state, "sessions": sessions, "users": holders})


def make_tally(
    active_until: Callable[[SessionState], float],
    terms: tuple[float, float, float, float, float, float] | None,
) -> Tally | CompiledTally:
    """The compiled tally when the extension is there and wanted and ``terms``
    (``Engine.active_terms``) are given, else the interpreter's."""
    if terms is not None:
        native = native_wanted()
        if native is not None:
            return CompiledTally(native, terms)
    return Tally(active_until)


def _nothing_pending(sessions: dict[str, SessionState]) -> None:
    """``BundleStore.write_back`` without a compiled path: the objects are up to date."""


class BundleStore:
    """The engine's store, scoped to one routing key at a time.

    ``load(key, partition, event)`` before an event, ``save()`` after it, ``flush()``
    at a checkpoint: a bundle touched by many events between two checkpoints is read
    and written once (one changelog message instead of one per event); ``discard()``
    forgets what was not written (the events behind it are read again). Sessions past
    their expiry are dropped on load. Bundles with nothing alive are deleted by a
    per-partition sweep run while an event *of that partition* is being processed,
    so the deletion goes to the right changelog partition and local store, and only
    once the last event that changed them is committed (``committed(partition)``:
    the partition's committed offset, None if unknown), so no event read again after
    a crash finds its entry gone.

    The sweep reads only the entries an in-memory expiry index says are due, a few
    per event (:data:`SWEEP_PER_EVENT`), so a mass expiry does not stall one. After
    every rebalance (``reset()``) the index and the census's :class:`Tally` are rebuilt
    by a scan of the local table, so entries recovered from the changelog are counted
    and swept too; it also reads a few entries per event (:data:`SCAN_PER_EVENT`).
    Until it ends, entries not reached yet are neither swept nor counted.
    """

    def __init__(
        self,
        table: MutableMapping[bytes, bytes],
        session_expiry: Callable[[SessionState], float],
        user_expiry: Callable[[UserState], float],
        sweep_every_s: float = 900.0,
        committed: Callable[[int], float | None] = lambda partition: math.inf,
        io: StateIO | None = None,
        *,
        active_until: Callable[[SessionState], float],
        active_terms: tuple[float, float, float, float, float, float] | None = None,
    ) -> None:
        self.table = table
        self.io: StateIO = MappingIO(table) if io is None else io
        self._committed = committed
        self._session_expiry = session_expiry
        self._user_expiry = user_expiry
        self._key = b""
        self._token: Any = None
        self._bundle = Bundle()
        self._dirty = False
        self.sweep_every_s = sweep_every_s
        self._next_sweep: dict[int, float] = {}  # when a load next calls the sweep
        self._next_due: dict[int, float] = {}  # when the sweep next takes due entries
        self._due: dict[int, deque[bytes]] = {}  # due entries not examined yet
        self._marks: dict[int, float] = {}  # event time per partition
        self._index: dict[int, ExpiryIndex[bytes]] = {}
        self.swept = 0
        self.shed = 0  # sessions forgotten to keep bundles under MAX_BUNDLE_BYTES
        self.scans = 0  # scans of the local table begun (one per rebalance)
        self._scanning: Iterator[tuple[bytes, bytes]] | None = None
        self._scan_begun = False
        # The latest activity in what scans read: the census's event time until this
        # worker's own events pass it (a restarted worker on a quiet stream has none).
        self._latest = -math.inf
        self.tally = make_tally(active_until, active_terms)
        # The compiled path's hook: writes the pending changes it keeps of a bundle's
        # sessions into their objects (all but ``last``, which it writes at once), before
        # the bundle is encoded or shown, or the engine reads one it did not load.
        self.write_back: Callable[[dict[str, SessionState]], object] = _nothing_pending
        # Bundles decoded (the changed ones and up to KEEP_READ others, read or written
        # since), and the changed ones by key and in the order of their first unwritten
        # change: all of them, and per partition. Flushes take the oldest, so the queues lose
        # their heads (a dict's iteration would walk every slot popped from its front:
        # per checkpoint, thousands while catching up).
        self._loaded: dict[bytes, Bundle] = {}
        self._pending: dict[bytes, _Unwritten] = {}
        self._order: deque[_Unwritten] = deque()
        self._order_in: dict[int, deque[_Unwritten]] = {}
        self._written: tuple[set[str], set[str]] | None = None

    def watch(self) -> tuple[set[str], set[str]]:
        """Starts recording the sessions and users the engine writes from here on (the
        compiled path keeps copies of what it reads, and drops the copies of these)."""
        if self._written is None:
            self._written = (set(), set())
        return self._written

    def reset(self) -> None:
        """Forgets the expiry index: partitions changed hands (call on a new generation)."""
        self._index.clear()
        self._next_sweep.clear()
        self._next_due.clear()
        self._due.clear()
        self._marks.clear()
        self._scanning = None
        self._scan_begun = False
        self.tally.clear()

    def load(self, key: str, partition: int, token: Any, ts: float) -> Bundle:
        """Makes ``key``'s bundle current and returns it; ``token`` is handed back at flush
        (the event).

        ``ts`` is the event's time: expiry in a partition follows *that partition's*
        event time. Partitions are consumed unevenly (a worker catching up, a restored
        partition), and sweeping a lagging partition by the clock of one ahead of it
        would forget sessions that are alive at the lagging partition's time.
        """
        marks = self._marks
        now = marks.get(partition)
        if now is None:  # the partition's first event since a rebalance
            if partition not in self._index:
                self.begin_scan()
                self._index.setdefault(partition, ExpiryIndex())  # the scan may have it
            now = marks[partition] = ts
        elif ts > now:
            now = marks[partition] = ts
        if self._scanning is not None:
            self.scan_some(SCAN_PER_EVENT)
        if now >= self._next_sweep.get(partition, _NEVER):
            self.swept += self._sweep_partition(partition, now, token)
        self._key = bkey = key.encode()
        self._token = token
        bundle = self._loaded.get(bkey)
        if bundle is None:
            raw = self.io.get(partition, bkey)
            bundle = _decode(raw) if raw is not None else Bundle(partition=partition)
            bundle.partition = partition
            self._loaded[bkey] = bundle
        self._bundle = bundle
        self._dirty = False
        expiry = self._session_expiry
        for session in bundle.sessions.values():
            if expiry(session) <= now:
                self._drop_expired(bundle.sessions, now)
                break
        return bundle

    def _drop_expired(self, sessions: dict[str, SessionState], now: float) -> None:
        expired = [fp for fp, s in sessions.items() if self._session_expiry(s) <= now]
        for fp in expired:
            del sessions[fp]
        self._dirty = True

    def discard(self) -> None:
        """Forgets bundles not yet written: their partitions moved, and whoever owns them
        now reads their events again from the last commit."""
        self._pending.clear()
        self._loaded.clear()
        self._order.clear()
        self._order_in.clear()

    @property
    def unwritten(self) -> int:
        """Changed bundles not yet written."""
        return len(self._pending)

    def oldest_change(self) -> float | None:
        """When (``time.monotonic``) the oldest change not yet written was made, if any."""
        return self._order[0].since if self._order else None

    def peek(self, key: bytes) -> Bundle | None:
        """``key``'s bundle as this worker knows it now, written or not (read-only use)."""
        bundle = self._loaded.get(key)
        if bundle is not None:
            self.write_back(bundle.sessions)
            return bundle
        raw = self.table.get(key)
        return _decode(raw) if raw is not None else None

    @property
    def current(self) -> Bundle:
        """The bundle of the last :meth:`load`."""
        return self._bundle

    def already_applied(self, offset: int) -> Sequence[bytes] | None:
        """The alerts to re-send if the event at ``offset`` was applied before, else None."""
        if offset > self._bundle.offset:
            return None
        for at, alerts in self._bundle.outbox:
            if at == offset:
                return alerts
        return ()

    def applied(self, offset: int, alerts: Sequence[bytes]) -> None:
        b = self._bundle
        b.offset = offset
        if alerts:
            b.outbox = (*b.outbox[1 - OUTBOX_EVENTS :], (offset, tuple(alerts)))
        self._dirty = True

    def save(self) -> None:
        """Marks the current bundle for writing at the next checkpoint."""
        if self._dirty:
            self.changing(self._bundle.offset)
            self._dirty = False

    def run_view(self) -> tuple[Any, ...]:
        """What the compiled path's runs read and write here directly
        (``FastPath.bundle_run``), as of now: the store, the event time per partition,
        when each partition's sweep is next due, the decoded bundles, the changed ones,
        and whether the re-index is going. A record not applied before, whose bundle is
        decoded, in a partition with no sweep due and no re-index going, and which holds
        no session past its expiry, needs nothing else of :meth:`load` (nor of
        :meth:`changing`, but for the bundle's first change since its write, for which
        the extension calls it). The extension loads it so, moving the partition's event
        time, the changed entry's token and the current bundle, and calls :meth:`load`
        for every other record. As :meth:`sweep` does nothing, it also moves the engine's
        sweep clock itself instead of handing a record that makes a sweep due back to the
        engine for that."""
        return (
            self,
            self._marks,
            self._next_sweep,
            self._loaded,
            self._pending,
            self._scanning is not None,
        )

    def changing(self, offset: int) -> None:
        """Marks the current bundle for writing at the next checkpoint before the record
        at ``offset`` changes it (the compiled path's runs apply many records without a
        :meth:`save` each). If it then changes nothing, it is written unchanged."""
        entry = self._pending.get(self._key)
        if entry is None:
            b = self._bundle
            entry = _Unwritten(self._key, b, self._token, time.monotonic(), offset)
            self._pending[self._key] = entry
            self._order.append(entry)
            in_partition = self._order_in.get(b.partition)
            if in_partition is None:
                in_partition = self._order_in[b.partition] = deque()
            in_partition.append(entry)
        else:
            entry.token = self._token

    def flush(self, older_than: float | None = None, within: float | None = None) -> int:
        """Writes changed bundles, each once, oldest first change first: all of them, or
        those first changed at least ``older_than`` seconds ago (so that writes spread
        evenly instead of coming in one burst that holds alerts back). With ``within``
        (seconds), it stops once that time has passed after its first
        :data:`WRITES_BEFORE_BUDGET` writes, leaving the rest, oldest first, to the next
        flush: changes made together (a catch-up's, thousands a second) fall due together,
        and written in one go they held the live events behind them for a third of a
        second. Each goes to the state under its last event (its partition). Returns the
        number of writes."""
        now = time.monotonic()
        cutoff = math.inf if older_than is None else now - older_than
        deadline = math.inf if within is None else now + within
        index, loaded, pending = self._index, self._loaded, self._pending
        order, order_in = self._order, self._order_in
        put, write_back = self.io.put, self.write_back
        written = 0
        while order and order[0].since <= cutoff:
            if written >= WRITES_BEFORE_BUDGET and time.monotonic() > deadline:
                break
            entry = order.popleft()
            key, b = entry.key, entry.bundle
            # The oldest change overall is the oldest of its partition.
            order_in[b.partition].popleft()
            del pending[key]
            write_back(b.sessions)
            raw = _encode(b)
            if len(raw) > MAX_BUNDLE_BYTES:
                raw = self._shed(key, b, raw)
            put(b.partition, key, raw, entry.first, entry.token)
            index[b.partition].touch(key, partial(self._expiry, b))
            self.tally.set(key, b)
            if len(raw) > KEEP_BYTES:
                loaded.pop(key, None)
            written += 1
        self.io.end()  # with no writes too: it ends the reads since the last flush
        if len(loaded) > len(pending) + KEEP_READ:
            # The unchanged ones, first read first, down to half the allowance.
            drop = len(loaded) - len(pending) - KEEP_READ // 2
            unchanged = (key for key in loaded if key not in pending)
            for key in list(islice(unchanged, drop)):
                del loaded[key]
        return written

    def unwritten_from(self) -> dict[int, int]:
        """Per partition with changes not yet durable, the source offset of the oldest:
        everything before it is in the table and its changelog. Changes are saved in
        offset order within a partition (the agent's ordering gate), so the first entry
        of a partition in first-change order is its oldest; written ones the I/O has
        not yet delivered are older still."""
        oldest = self.io.undelivered_from()
        for p, queue in self._order_in.items():
            if queue:
                first = queue[0].first
                oldest[p] = min(first, oldest.get(p, first))
        return oldest

    def _shed(self, key: bytes, b: Bundle, raw: bytes) -> bytes:
        """Forgets the bundle's least useful sessions until it fits: ended ones first,
        longest ended, then the least recently active. A forgotten session that comes
        back is one the engine never saw (``unknown_session``), and a reuse of a
        forgotten ended one goes unnoticed: rare (see README) and counted."""
        order = sorted(b.sessions, key=lambda fp: _forget_first(b.sessions[fp]))
        while len(raw) > MAX_BUNDLE_BYTES and order:
            keep = int(len(order) * SHED_TO * MAX_BUNDLE_BYTES / len(raw))
            dropped, order = order[: len(order) - keep], order[len(order) - keep :]
            for fp in dropped:
                del b.sessions[fp]
            if b.user is not None:
                gone = set(dropped)
                b.user.sessions = tuple(fp for fp in b.user.sessions if fp not in gone)
            self.shed += len(dropped)
            raw = _encode(b)
        if len(raw) > MAX_BUNDLE_BYTES:  # no sessions left: only the re-send memory
            b.outbox = ()
            raw = _encode(b)
        log.warning(  # the routing key: a user name (not secret) or a fingerprint
            "state of %s reached %d bytes: sessions forgotten to fit (%d so far)",
            key.decode(errors="replace"),
            MAX_BUNDLE_BYTES,
            self.shed,
        )
        return raw

    # -- StateStore ---------------------------------------------------------------
    def get_session(self, fp: str) -> SessionState | None:
        return self._bundle.sessions.get(fp)

    def put_session(self, fp: str, state: SessionState) -> None:
        self._bundle.sessions[fp] = state
        self._dirty = True
        if self._written is not None:
            self._written[0].add(fp)

    def get_user(self, name: str) -> UserState | None:
        return self._bundle.user

    def put_user(self, name: str, state: UserState) -> None:
        self._bundle.user = state
        self._dirty = True
        if self._written is not None:
            self._written[1].add(name)

    def sweep(self, now: float) -> int:
        """Nothing to do: each partition is swept on load, by its own event time."""
        return 0

    def census(self, now: float, active: Callable[[SessionState], bool]) -> Census:
        """This worker's local table (its assigned partitions) as of the last flush, from
        the tally: nothing is read (``active`` is the tally's ``active_until``). At
        ``now``, or at the latest activity a re-index read if later: a restarted worker
        counts what it recovered before any event comes."""
        return self.tally.census(max(now, self._latest))

    def _expiry(self, b: Bundle) -> float:
        """When nothing in the bundle is alive any more (event time)."""
        latest = self._user_expiry(b.user) if b.user is not None else -math.inf
        for session in b.sessions.values():
            latest = max(latest, self._session_expiry(session))
        return latest

    def begin_scan(self) -> None:
        """Starts the re-index of the local table, once per rebalance: at the first event
        after it, or before from the worker's timer once the state is recovered (so that
        a quiet stream is swept and counted too)."""
        if not self._scan_begun:
            self._scan_begun = True
            self.scans += 1
            self._scanning = self.io.scan()

    @property
    def scanning(self) -> bool:
        """Whether the re-index since the last rebalance is still going."""
        return self._scanning is not None

    def scan_some(self, n: int) -> None:
        """Indexes and counts the scan's next ``n`` entries, each by the partition that
        owns it, and ends the scan after the last. Events call it (a few entries each);
        the worker also does between events, so that a quiet stream ends it too."""
        if self._scanning is None:
            return
        taken = 0
        for key, raw in islice(self._scanning, n):
            b = _decode(raw)
            index = self._index.get(b.partition)
            if index is None:
                index = self._index[b.partition] = ExpiryIndex()
            index.touch(key, partial(self._expiry, b))
            self.tally.set(key, b)
            for session in b.sessions.values():
                if session.last > self._latest:
                    self._latest = session.last
            taken += 1
        if taken < n:
            self._scanning = None

    def _sweep_partition(self, partition: int, now: float, token: Any) -> int:
        """Takes the partition's due entries every ``sweep_every_s`` of its event time
        and examines up to :data:`SWEEP_PER_EVENT` of them; the rest wait for its next
        events (the load calls again at once while any wait)."""
        backlog = self._due.get(partition)
        if backlog is None:
            backlog = self._due[partition] = deque()
        index = self._index[partition]
        if now >= self._next_due.get(partition, _NEVER):
            self._next_due[partition] = now + self.sweep_every_s
            backlog.extend(index.due(now))
        committed = self._committed(partition)  # no await below: it stays the same
        deletable_before = -math.inf if committed is None else committed
        dropped = 0
        for _ in range(min(SWEEP_PER_EVENT, len(backlog))):
            key = backlog.popleft()
            if key in self._pending:
                continue  # changed, not written yet: filed again when written
            raw = self.io.get(partition, key)
            if raw is None:
                continue
            b = _decode(raw)
            if b.partition != partition:
                continue
            if self._expiry(b) <= now and b.offset < deletable_before:
                self.io.put(partition, key, None, None, token)
                self._loaded.pop(key, None)
                self.tally.set(key, None)
                dropped += 1
            else:
                # Alive, or dead but changed by an event not committed yet: after a
                # crash that event comes again and must find the entry as it left it.
                index.touch(key, partial(self._expiry, b))
        # Derivable from the two above, but kept: the load's check is then one lookup.
        self._next_sweep[partition] = _NEVER if backlog else self._next_due[partition]
        if dropped:
            self.io.end()
        return dropped

    @property
    def sweep_backlog(self) -> int:
        """Due entries not examined yet, over all partitions."""
        return sum(len(keys) for keys in self._due.values())
