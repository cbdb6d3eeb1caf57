"""The worker's state store without Kafka: per-key bundles in a plain mapping, swept by
partition through an expiry index instead of scans of the whole table."""

from __future__ import annotations

import io
import math
import random
from types import SimpleNamespace
from typing import Any

import pytest

import detector.stream.bundle as bundle_module
from detector.alerts import Alert
from detector.engine import Engine
from detector.events import Event, decode
from detector.fingerprint import Fingerprinter
from detector.simulate import Simulation
from detector.state import SessionState, UserState
from detector.store import ExpiryIndex
from detector.stream.bundle import BundleStore, MappingIO, WriteBudget, decode_bundle
from detector.stream.routing import routing_key
from tests.helpers import KEY, SID, SID2, Story, policy


class CountingTable(dict[bytes, bytes]):
    """A dict that counts scans (listings of its keys) and reads."""

    scans = 0
    gets = 0

    def keys(self) -> Any:
        self.scans += 1
        return super().keys()

    def get(self, key: bytes, default: Any = None) -> Any:
        self.gets += 1
        return super().get(key, default)


class Worker:
    """What the Faust agent does per event, with a chosen partition per routing key."""

    def __init__(self, partitions: dict[str, int]) -> None:
        self.table = CountingTable()
        self.fp = Fingerprinter(KEY)
        self.engine = Engine(policy({"detector": {"remember_me_retention_days": 1}}), self.fp)
        self.written: list[Any] = []  # the token (offset) of each write, in order
        self.store = BundleStore(
            self.table,
            self.engine.session_expiry,
            self.engine.user_expiry,
            sweep_every_s=900,
            io=MappingIO(self.table, self.written.append),
            active_until=self.engine.active_until,
        )
        self.engine.store = self.store
        self.partitions = partitions
        self.offset = 0

    def feed(self, lines: list[bytes], batch: int = 25, flush: bool = True) -> list[Alert]:
        """Applies ``lines`` in agent-sized batches, flushing writes after each (or not:
        the worker writes at checkpoints, which may be many batches apart)."""
        alerts: list[Alert] = []
        for start in range(0, len(lines), batch):
            for line in lines[start : start + batch]:
                ev = decode(line)
                assert isinstance(ev, Event)
                key = routing_key(ev, self.fp)
                self.offset += 1
                self.store.load(key, self.partitions.get(key, 0), self.offset, ev.epoch)
                alerts += self.engine.process(ev, line)
                self.store.applied(self.offset, [])
                self.store.save()
            if flush:
                self.store.flush()
        return alerts

    def tick(self, minute: float) -> None:
        """One more event: a sweep runs when the *next* event after time moved is loaded."""
        s = Story()
        s.add("unlock", minute, user="tick")
        list(self.feed(s.lines()))

    def users(self) -> set[str]:
        return {k.decode() for k in self.table} - {"u:tick"}


def test_dead_bundles_are_swept_in_their_own_partition_only() -> None:
    w = Worker({"u:bob": 1, "u:carol": 1})
    s = Story()
    s.login(0, user="alice")
    s.login(0, sid="B" * 32, user="bob")
    s.login(1, sid="C" * 32, user="carol")
    list(w.feed(s.lines()))
    assert w.users() == {"u:alice", "u:bob", "u:carol"}
    # Two days later only partition 0 sees traffic: alice's dead bundle goes, bob's waits.
    later = Story()
    later.login(2 * 24 * 60, sid="D" * 32, user="dave")
    list(w.feed(later.lines()))
    w.tick(2 * 24 * 60)
    assert w.users() == {"u:bob", "u:carol", "u:dave"}
    # An event of partition 1 sweeps there too.
    last = Story()
    last.login(2 * 24 * 60 + 20, sid="C" * 32, user="carol")
    list(w.feed(last.lines()))
    assert w.users() == {"u:carol", "u:dave"}
    bundle = decode_bundle(w.table[b"u:carol"])
    assert bundle.partition == 1 and len(bundle.sessions) == 1


def test_a_lagging_partition_keeps_its_live_sessions() -> None:
    """Partition 1 is consumed two days behind partition 0 (a worker catching up): bob's
    session, alive at partition 1's own event time, must not be swept by partition 0's."""
    w = Worker({"u:bob": 1})
    ahead = Story()
    ahead.login(0, user="alice")
    ahead.tx(2 * 24 * 60, user="alice")
    behind = Story()
    behind.login(0, sid=SID2, user="bob")
    behind.tx(10, sid=SID2, user="bob")
    alerts = w.feed(ahead.lines()) + w.feed(behind.lines()[:1]) + w.feed(behind.lines()[1:])
    assert [(a.kind, a.user) for a in alerts if a.user == "bob"] == []


def test_sweeps_do_not_scan_the_table() -> None:
    w = Worker({})
    s = Story()
    for day in range(4):
        for i in range(50):
            s.login(day * 24 * 60 + i, sid=f"{day:02d}{i:02d}" + SID[4:], user=f"u{day}-{i}")
    list(w.feed(s.lines()))
    assert w.store.swept >= 100  # days 0 and 1 are gone...
    assert w.table.scans == 1  # ...with one scan, when the partition was first seen
    assert len(w.table) <= 100


def test_a_mass_expiry_is_swept_a_few_entries_per_event() -> None:
    """A worker back after two days finds every entry due at once: each event examines
    at most SWEEP_PER_EVENT of them (instead of one event reading and deleting them
    all while alerts wait), and the next events take the rest."""
    per_event = bundle_module.SWEEP_PER_EVENT
    n = 5 * per_event + 3
    w = Worker({})
    s = Story()
    for i in range(n):
        s.login(i / 10, sid=f"{i:04d}" + SID[4:], user=f"u{i}")
    w.feed(s.lines())
    assert len(w.users()) == n
    left = [len(w.users())]
    for step in range(7):
        gets = w.table.gets
        w.tick(2 * 24 * 60 + step)
        assert w.table.gets - gets <= per_event + 1  # the due ones, and the tick's own
        left.append(len(w.users()))
    assert left == [max(n - k * per_event, 0) for k in range(8)]
    assert w.store.sweep_backlog == 0 and w.store.swept == n


def test_entries_recovered_from_a_changelog_are_indexed_after_a_rebalance() -> None:
    w = Worker({})
    s = Story()
    s.login(0, user="alice")
    list(w.feed(s.lines()))
    # Another worker's entry appears (changelog recovery after a rebalance).
    other = Worker({})
    t = Story()
    t.login(0, sid="B" * 32, user="bob")
    list(other.feed(t.lines()))
    w.table[b"u:bob"] = other.table[b"u:bob"]
    w.store.reset()
    later = Story()
    later.login(2 * 24 * 60, sid="D" * 32, user="dave")
    list(w.feed(later.lines()))
    w.tick(2 * 24 * 60)
    assert w.users() == {"u:dave"}
    assert w.table.scans == 2


def test_a_locked_user_bundle_is_kept_until_unlocked() -> None:
    w = Worker({})
    s = Story()
    s.add("lockout", 0, user="mallory")
    list(w.feed(s.lines()))
    w.tick(3 * 24 * 60)
    w.tick(3 * 24 * 60)
    assert "u:mallory" in w.users()
    t = Story()
    t.add("unlock", 3 * 24 * 60 + 1, user="mallory")
    list(w.feed(t.lines()))
    w.tick(6 * 24 * 60)
    w.tick(6 * 24 * 60)
    assert "u:mallory" not in w.users()


def test_a_batch_writes_each_bundle_once_under_its_last_event() -> None:
    w = Worker({})
    s = Story()
    s.login(0)
    for m in range(1, 10):
        s.tx(m)
    s.login(3, sid="B" * 32, user="bob")
    w.feed(s.lines(), batch=100)
    assert w.written == [10, 11]  # alice's last event is the 10th, bob's the 11th
    assert decode_bundle(w.table[b"u:alice"]).offset == 10


def test_an_empty_bundle_is_due_at_once() -> None:
    index: ExpiryIndex[bytes] = ExpiryIndex()
    index.touch(b"nothing-left", lambda: -math.inf)
    index.touch(b"locked", lambda: math.inf)
    assert index.due(0.0) == [b"nothing-left"] and len(index) == 0


def test_a_bundle_over_the_record_limit_forgets_ended_then_idle_sessions_first(
    monkeypatch: Any,
) -> None:
    """An integration account that logs in (and out) for every request keeps each
    session for the retention: its one bundle outgrew Kafka's record limit and the
    worker died on the send. Now every write fits; the sessions forgotten are the
    ended ones, longest ended first, and every live session is kept."""
    from detector.stream import bundle

    monkeypatch.setattr(bundle, "MAX_BUNDLE_BYTES", 40_000)
    w = Worker({})
    s = Story()
    ended = [f"{i:032x}" for i in range(300)]
    for i, sid in enumerate(ended):
        s.login(i * 0.1, sid=sid, user="svc")
        s.add("logout", i * 0.1 + 0.05, session_id=sid, user="svc")
    live = [f"{i + 10_000:032x}" for i in range(80)]  # enough to need a shed among them
    for i, sid in enumerate(live):
        s.login(30 + i * 0.1, sid=sid, user="svc")
    w.feed(s.lines())
    assert all(len(raw) <= 40_000 for raw in w.table.values())
    assert w.store.shed > 0
    kept = decode_bundle(w.table[b"u:svc"]).sessions
    assert len(kept) < len(ended) + len(live)
    assert {w.fp(sid) for sid in live} <= set(kept)
    still_ended = [sid for sid in ended if w.fp(sid) in kept]
    assert still_ended == ended[len(ended) - len(still_ended) :]  # the latest ended ones
    user = decode_bundle(w.table[b"u:svc"]).user
    assert user is not None and set(user.sessions) <= set(kept)


def test_a_bundle_under_the_limit_is_written_whole() -> None:
    w = Worker({})
    s = Story()
    for i in range(50):
        s.login(i * 0.1, sid=f"{i:032x}", user="svc")
    w.feed(s.lines())
    assert w.store.shed == 0
    assert len(decode_bundle(w.table[b"u:svc"]).sessions) == 50


def test_changes_between_checkpoints_are_kept_in_memory_and_written_once() -> None:
    """Batches between two checkpoints read a bundle from the table once and write it
    once; until then the table holds the last checkpoint's state (what a crash or a
    rebalance resumes from), and ``discard`` goes back to it."""
    w = Worker({})
    s = Story()
    s.login(0, user="alice")
    for minute in (1, 2, 3):
        s.tx(minute, user="alice")
    w.feed(s.lines(), batch=1, flush=False)  # four batches, no checkpoint
    assert b"u:alice" not in w.table
    seen = w.store.peek(b"u:alice")
    assert seen is not None and seen.offset == 4 and len(seen.sessions) == 1
    assert w.store.unwritten == 1
    assert w.store.flush() == 1
    assert decode_bundle(w.table[b"u:alice"]).offset == 4 and w.written == [4]
    later = Story()
    later.tx(4, user="alice")
    w.feed(later.lines(), batch=1, flush=False)
    assert w.store.peek(b"u:alice").offset == 5  # type: ignore[union-attr]
    w.store.discard()  # a rebalance: what was not written is forgotten
    assert w.store.peek(b"u:alice").offset == 4  # type: ignore[union-attr]
    assert w.store.unwritten == 0


def test_a_written_bundle_stays_decoded_for_its_next_events_within_a_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A user's next event after a checkpoint finds the bundle without a read (nor the
    compiled path new objects to copy); unchanged ones beyond KEEP_READ go, first read
    first, a discard forgets them all (another worker may change them), and one over
    KEEP_BYTES is not kept once written."""
    monkeypatch.setattr(bundle_module, "KEEP_READ", 4)
    w = Worker({})
    s = Story()
    for i, user in enumerate("abcdefgh"):
        s.login(i, user=user, sid=f"{SID}{i}")
    w.feed(s.lines())  # each written at its checkpoint
    kept = list(w.store._loaded)
    assert len(kept) <= 4 and kept == [f"u:{u}".encode() for u in "efgh"][-len(kept) :]
    reads = w.table.gets
    again = Story()
    again.tx(9, user="h", sid=f"{SID}7")
    w.feed(again.lines())
    assert w.table.gets == reads  # found decoded
    assert decode_bundle(w.table[b"u:h"]).offset == w.offset  # and written as before
    w.store.discard()
    assert not w.store._loaded
    monkeypatch.setattr(bundle_module, "KEEP_BYTES", len(w.table[b"u:h"]) - 1)
    again = Story()
    again.tx(10, user="h", sid=f"{SID}7")
    w.feed(again.lines())
    assert b"u:h" not in w.store._loaded  # too big to keep once written


def test_a_rolling_flush_writes_the_oldest_changes_and_reports_what_is_left() -> None:
    """Writes spread out: only bundles first changed ``older_than`` seconds ago are
    written, oldest first; per partition, the offset of the oldest change still unwritten
    bounds what may be committed."""
    w = Worker({"u:bob": 1})
    s = Story()
    s.login(0, user="alice")  # offset 1, partition 0
    w.feed(s.lines(), flush=False)
    w.store._pending[b"u:alice"].since -= 10  # changed ten seconds ago
    s2 = Story()
    s2.login(1, sid=SID2, user="bob")  # offset 2, partition 1
    s2.tx(2, user="alice")  # offset 3: alice again, her first unwritten change stays 1
    w.feed(s2.lines(), flush=False)
    assert w.store.unwritten_from() == {0: 1, 1: 2}
    assert w.store.flush(older_than=5.0) == 1
    assert set(w.table) == {b"u:alice"} and decode_bundle(w.table[b"u:alice"]).offset == 3
    assert w.store.unwritten_from() == {1: 2}
    s3 = Story()
    s3.tx(3, user="alice")  # offset 4: a change after the write
    w.feed(s3.lines(), flush=False)
    assert w.store.unwritten_from() == {0: 4, 1: 2}
    assert w.store.flush() == 2
    assert w.store.unwritten_from() == {} and w.store.unwritten == 0


def test_the_write_budget_grants_a_share_of_the_wall_time_and_pays_overruns_first() -> None:
    """Rolling writes while records come get a share of the time, however often a flush
    is asked for (after every batch, over a hundred a second at live rates): a grant once
    ``least`` has gathered, at most ``most``; each flush costs at least ``least`` (so
    flushes are few, each with more writes to make together); one that overran its
    grant (its first writes are not cut) leaves a debt that later grants pay first."""
    now = [100.0]
    budget = WriteBudget(0.25, least=0.01, most=0.02, clock=lambda: now[0])
    assert budget.grant() == 0.02  # starts with the most it ever grants
    now[0] += 0.02  # the flush took its grant ...
    budget.spent()  # ... and 5 ms gathered meanwhile
    assert budget.grant() is None
    now[0] += 0.02  # 10 ms gathered in all
    assert budget.grant() == pytest.approx(0.01)
    now[0] += 0.05  # overran by 40 ms: 10 + 12.5 - 50 = -27.5 ms
    budget.spent()
    granted = []
    for _ in range(40):  # asked every 5 ms, as after each batch: 50 ms gather in 200
        now[0] += 0.005
        grant = budget.grant()
        if grant is not None:
            granted.append(grant)
            budget.spent()  # took no time, costs 10 ms all the same
    # The debt paid back (27.5 ms: 110 ms of wall time), then a grant per 40 ms, each
    # what gathered by the ask that found 10 ms or more.
    assert len(granted) == 2 and all(0.01 <= g <= 0.01125 + 1e-9 for g in granted)
    now[0] += 10.0  # idle for long: no more than ``most`` at once
    assert budget.grant() == 0.02
    with pytest.raises(ValueError):
        WriteBudget(0.0, 0.01, 0.02)
    with pytest.raises(ValueError):
        WriteBudget(0.25, 0.03, 0.02)
    with pytest.raises(ValueError):
        WriteBudget(0.25, 0.01, 0.02, behind_share=0.2)


def test_the_write_budget_grants_a_larger_share_while_writes_fall_behind() -> None:
    """A quarter of the time may not keep up on a slow hour; while a change has waited
    too long the credit gathers at ``behind_share``, so the backlog is written in
    flushes as before (more of them) instead of waiting for a full checkpoint."""
    now = [0.0]
    budget = WriteBudget(0.25, 0.01, 0.02, clock=lambda: now[0], behind_share=0.5)
    budget.grant()
    budget.spent()  # 10 ms (the least a flush costs) off the 20 it started with
    now[0] += 0.02
    assert budget.grant() == pytest.approx(0.015)  # 10 + 20 ms at a quarter
    budget.spent()
    now[0] += 0.02
    assert budget.grant(behind=True) == pytest.approx(0.015)  # 5 + 20 ms at a half
    budget.spent()
    grants = {False: 0, True: 0}
    for behind in (False, True):
        for _ in range(100):  # one second, asked every 10 ms, each flush 5 ms long
            now[0] += 0.005
            if budget.grant(behind) is not None:
                grants[behind] += 1
                now[0] += 0.005
                budget.spent()
            else:
                now[0] += 0.005
    assert grants[False] in (24, 25, 26) and grants[True] in (49, 50, 51)


def test_the_oldest_unwritten_change_is_known(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the oldest change not yet written was made (the worker's checkpoints give
    writes more time when it has waited too long); none once all are written."""
    clock = [50.0]
    monkeypatch.setattr(bundle_module, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    _, _, store = _recording_store()
    assert store.oldest_change() is None
    for offset, key in enumerate(("u:a", "u:b", "u:a")):
        store.load(key, 0, key, 0.0)
        store.applied(offset, [])
        store.save()
        clock[0] += 1.0
    assert store.oldest_change() == 50.0
    store.flush(older_than=2.5)  # at 53: u:a (first changed at 50) is due, u:b (51) not
    assert store.oldest_change() == 51.0
    store.flush()
    assert store.oldest_change() is None


def _recording_store() -> tuple[dict[bytes, bytes], list[str], BundleStore]:
    """A store over a dict whose writes are recorded in order; nothing ever expires."""
    table: dict[bytes, bytes] = {}
    written: list[str] = []
    store = BundleStore(
        table,
        lambda s: math.inf,
        lambda u: math.inf,
        io=MappingIO(table, written.append),
        active_until=lambda s: math.inf,
    )
    return table, written, store


def test_a_flush_within_a_time_budget_leaves_the_rest_due_to_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Changes falling due together (a catch-up's) are written over several rolling
    flushes: each writes the oldest due first, stops once its time is up (after its first
    few writes), and the offsets it leaves unwritten still bound the commit."""
    clock = [0.0]
    tick = [0.0]

    def monotonic() -> float:
        clock[0] += tick[0]  # each look at the clock: ``tick`` later
        return clock[0]

    monkeypatch.setattr(bundle_module, "time", SimpleNamespace(monotonic=monotonic))
    monkeypatch.setattr(bundle_module, "WRITES_BEFORE_BUDGET", 4)
    table, written, store = _recording_store()
    for offset in range(20):
        key = f"u:{offset}"
        store.load(key, offset % 2, key, 0.0)
        store.applied(offset, [])
        store.save()
    clock[0], tick[0] = 100.0, 0.001
    # Four writes unchecked, then one per look at the clock until 3.5 ms have passed.
    assert store.flush(older_than=5.0, within=0.0035) == 7
    assert written == [f"u:{n}" for n in range(7)]
    assert store.unwritten_from() == {0: 8, 1: 7} and store.unwritten == 13
    assert store.flush(older_than=5.0, within=0.0) == 4  # the budget never cuts the first
    assert written[7:] == [f"u:{n}" for n in range(7, 11)]
    assert store.flush(older_than=5.0) == 9  # no budget: everything due
    assert store.unwritten_from() == {} and set(table) == {f"u:{n}".encode() for n in range(20)}


def test_rolling_flushes_keep_the_oldest_unwritten_change_of_every_partition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Thousands of changes over four partitions with a rolling flush after every few:
    each time, what ``unwritten_from`` reports is the oldest first change still unwritten
    per partition (recomputed here from the pending changes), and the writes come oldest
    first, every changed bundle's latest state once."""
    clock = [0.0]
    monkeypatch.setattr(bundle_module, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    table, written, store = _recording_store()
    rng = random.Random(7)
    pending: dict[str, tuple[int, int]] = {}  # key -> (partition, first unwritten offset)
    for offset in range(5000):
        clock[0] = float(offset)  # seconds
        key = f"u:{rng.randrange(300)}"
        partition = int(key[2:]) % 4
        store.load(key, partition, key, 0.0)
        store.applied(offset, [])
        store.save()
        pending.setdefault(key, (partition, offset))
        if offset % 7 == 0:
            older = None if offset % 700 == 0 else rng.choice([0.0, 50.0, 200.0])
            cutoff = math.inf if older is None else clock[0] - older
            due = [k for k, (_, first) in pending.items() if first <= cutoff]
            assert store.flush(older) == len(due)
            assert written[len(written) - len(due) :] == due
            for k in due:
                del pending[k]
            oldest: dict[int, int] = {}
            for p, first in pending.values():
                oldest[p] = min(first, oldest.get(p, first))
            assert store.unwritten_from() == oldest
            assert store.unwritten == len(pending)
    store.flush()
    assert store.unwritten_from() == {} and store.unwritten == 0
    assert set(table) == {f"u:{n}".encode() for n in range(300)}


def test_a_dead_bundle_stays_until_the_event_that_last_changed_it_is_committed() -> None:
    """After a crash, Kafka re-delivers events from the commit on; one of them must find
    its entry as it left it, so the sweep deletes an entry only once its last event is
    committed (and never while the commit is unknown)."""
    w = Worker({})
    commits: dict[int, int | None] = {0: None}
    w.store._committed = commits.get
    s = Story()
    s.login(0, user="alice")  # offset 1
    w.feed(s.lines())
    w.tick(2 * 24 * 60)  # dead by then; the commit is unknown
    assert "u:alice" in w.users()
    commits[0] = 1  # offset 1 itself not committed yet
    w.tick(2 * 24 * 60 + 20)
    assert "u:alice" in w.users()
    commits[0] = 2
    w.tick(2 * 24 * 60 + 40)
    assert "u:alice" not in w.users()


def recount(w: Worker) -> tuple[int, int, dict[str, int]]:
    """The census the slow way: every entry of the table decoded at the engine's time."""
    bundles = [decode_bundle(raw) for raw in dict.values(w.table)]
    sessions = [s for b in bundles for s in b.sessions.values()]
    now = w.engine.watermark
    live = [s for s in sessions if w.engine.is_active(s, now)]
    entries = {
        "state": len(bundles),
        "sessions": len(sessions),
        "users": sum(b.user is not None for b in bundles),
    }
    return sum(not s.guest for s in live), sum(s.guest for s in live), entries


def simulated(users: int, hours: float, seed: int) -> list[bytes]:
    buf = io.BytesIO()
    Simulation(users=users, hours=hours, seed=seed).write(buf)
    return buf.getvalue().splitlines()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_tally_is_the_census_of_the_table_after_every_flush(seed: int) -> None:
    """Live sessions and entries kept as entries are written, swept and shed equal a
    recount of the whole table, across a simulated day and a quiet second one (every
    session timing out, entries swept)."""
    lines = simulated(40, 24, seed)
    late = Story()
    late.login(36 * 60, user="late")
    late.tx(36 * 60 + 1, user="late")
    late.tx(60 * 60, user="late")
    rng = random.Random(seed)
    w = Worker({})
    seen_live = 0
    start = 0
    lines += late.lines()
    while start < len(lines):
        step = rng.randrange(1, 400)
        w.feed(lines[start : start + step], batch=step)
        start += step
        users, guests, entries = recount(w)
        assert tuple(w.engine.census()) == (users, guests, entries)
        seen_live = max(seen_live, users + guests)
    final = w.engine.census()
    assert seen_live > 20 and w.store.swept > 0
    assert final.user_sessions + final.guest_sessions <= 2  # late's, the tick's: timed out


def test_a_rebalance_rescans_a_few_entries_per_event_and_then_counts_them_all() -> None:
    """Entries recovered from a changelog are indexed and counted SCAN_PER_EVENT per
    event, then swept when dead, and the census equals the table's again."""
    per_event = bundle_module.SCAN_PER_EVENT
    n = 3 * per_event + 5
    w = Worker({})
    s = Story()
    for i in range(n):
        s.login(i / 100, sid=f"{i:04d}" + SID[4:], user=f"u{i}")
    w.feed(s.lines(), batch=n)
    assert w.engine.census().user_sessions == n
    w.store.reset()  # a rebalance: the index and the tally start again
    assert w.engine.census().entries["state"] == 0
    counted = []
    for minute in range(5):
        gets = w.table.gets
        w.tick(10 + minute)
        assert w.table.gets - gets <= per_event + 1  # the scan's share and the tick's own
        counted.append(w.engine.census().entries["state"])
    assert counted == [per_event + 1, 2 * per_event + 1, 3 * per_event + 1, n + 1, n + 1]
    assert w.store.scans == 2 and w.table.scans == 2
    assert tuple(w.engine.census()) == recount(w)
    w.tick(2 * 24 * 60)  # two days on: all due, swept SWEEP_PER_EVENT per event
    while w.store.sweep_backlog:
        w.tick(2 * 24 * 60)
    assert w.users() == set() and tuple(w.engine.census()) == recount(w)


def test_a_restarted_worker_counts_its_recovered_state_before_any_event() -> None:
    """A quiet stream after a restart: the worker's timer starts the re-index, and the
    census is taken at the latest activity it read (no event has moved the new engine's
    clock), so it is the census the worker had before it stopped."""
    w = Worker({})
    s = Story()
    for i in range(30):  # some still live at the end, some idle out before it
        s.login(i * 2, sid=f"{i:04d}" + SID[4:], user=f"u{i % 7}")
        s.tx(i * 2 + 1, sid=f"{i:04d}" + SID[4:], user=f"u{i % 7}")
    w.feed(s.lines())
    before = w.engine.census()
    assert 0 < before.user_sessions < 30
    restarted = Worker({})
    restarted.table.update(w.table)  # what it recovers from the changelog
    assert restarted.engine.census().user_sessions == 0  # nothing read yet
    restarted.store.begin_scan()
    while restarted.store.scanning:
        restarted.store.scan_some(4)
    assert restarted.engine.census() == before
    assert restarted.store.scans == 1
    restarted.tick(61)  # the first event then does not scan again
    assert restarted.store.scans == 1 and restarted.table.scans == 1


def test_the_tally_stays_the_size_of_the_table_when_nobody_asks_for_a_census() -> None:
    """A worker nobody scrapes: rewriting the same entries must not grow the tally."""
    tally = bundle_module.Tally(lambda s: math.inf)
    for i in range(20_000):
        b = bundle_module.Bundle(
            sessions={f"s{j}": SessionState(start=0.0, last=float(i)) for j in range(3)}
        )
        tally.set(f"k{i % 10}".encode(), b)
    assert len(tally._heap) <= 2 * 30 + 1024
    assert tuple(tally.census(0.0))[:2] == (30, 0)


def _random_bundle(rng: random.Random, now: float) -> bundle_module.Bundle:
    """A bundle of up to 4 sessions of every kind the census tells apart."""
    sessions = {
        f"s{j}": SessionState(
            start=now - rng.uniform(0, 40_000),
            last=now + rng.uniform(-40_000, 600),
            guest=rng.random() < 0.3,
            remember_me=rng.random() < 0.2,
            ended="logout" if rng.random() < 0.2 else None,
        )
        for j in range(rng.randrange(5))
    }
    user = UserState(last=now) if rng.random() < 0.5 else None
    return bundle_module.Bundle(sessions=sessions, user=user)


#: Default terms (no life spans, Remember-me kept 30 days) and ServiceNow-like ones.
TALLY_POLICIES = [
    {},
    {
        "policy": {
            "glide.ui.active.session.life_span": 600,
            "glide.guest.active.session.life_span": 60,
        },
        "detector": {"remember_me_retention_days": 1, "clock_skew_seconds": 7},
    },
]


@pytest.mark.parametrize("config", TALLY_POLICIES)
def test_the_compiled_tally_counts_what_the_interpreter_s_counts(config: dict[str, Any]) -> None:
    """The extension's tally against the Python one and a recount, through random writes,
    rewrites, deletes and censuses at moving times (life spans, Remember-me, guests, ended
    sessions, users), many clean-ups of the heap's leftovers included."""
    native = pytest.importorskip("sessionwatch_native")
    rng = random.Random(11)
    engine = Engine(policy(config), Fingerprinter(KEY))
    python = bundle_module.Tally(engine.active_until)
    compiled = bundle_module.CompiledTally(native, engine.active_terms())
    held: dict[bytes, bundle_module.Bundle] = {}
    now, largest_heap = 0.0, 0
    for step in range(30_000):
        key = b"k%d" % rng.randrange(400)
        if rng.random() < 0.05:
            python.set(key, None)
            compiled.set(key, None)
            held.pop(key, None)
        else:
            b = _random_bundle(rng, now)
            python.set(key, b)
            compiled.set(key, b)
            held[key] = b
        largest_heap = max(largest_heap, compiled.heap_len())
        if step % 97 == 0:
            now += rng.uniform(0, 600)
            census = compiled.census(now)
            assert census == python.census(now)
            sessions = [s for b in held.values() for s in b.sessions.values()]
            live = [s for s in sessions if engine.active_until(s) >= now]
            assert census.user_sessions == sum(not s.guest for s in live)
            assert census.guest_sessions == sum(s.guest for s in live)
            assert census.entries == {
                "state": len(held),
                "sessions": sum(len(b.sessions) for b in held.values()),
                "users": sum(b.user is not None for b in held.values()),
            }
            assert census.user_sessions > 0  # the draw keeps some live throughout
    # Clean-ups happened and bounded it (every rewrite leaves its old times behind).
    assert largest_heap <= 2 * 400 * 4 + 1024 + 4
    assert compiled.census(now + 1e9) == python.census(now + 1e9)
    compiled.clear()
    assert compiled.census(now) == (0, 0, {"state": 0, "sessions": 0, "users": 0})
    assert compiled.heap_len() == 0


def test_the_worker_s_store_keeps_the_compiled_tally_unless_turned_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Given the engine's terms, the store counts with the extension's tally; with
    SESSIONWATCH_NATIVE=0 or without terms, with the interpreter's."""
    pytest.importorskip("sessionwatch_native")
    engine = Engine(policy(), Fingerprinter(KEY))

    def store(terms: bool) -> BundleStore:
        return BundleStore(
            {},
            engine.session_expiry,
            engine.user_expiry,
            active_until=engine.active_until,
            active_terms=engine.active_terms() if terms else None,
        )

    assert isinstance(store(True).tally, bundle_module.CompiledTally)
    assert isinstance(store(False).tally, bundle_module.Tally)
    monkeypatch.setenv("SESSIONWATCH_NATIVE", "0")
    assert isinstance(store(True).tally, bundle_module.Tally)


def test_the_tally_s_census_is_a_recount_through_rewrites_deletes_and_clean_ups() -> None:
    """Random writes, rewrites and deletes of a few hundred entries, with censuses at
    moving times: each census equals a count of the entries as last written, through
    many clean-ups of the heap's leftovers (each rewrite leaves one)."""
    rng = random.Random(7)
    engine = Engine(policy(), Fingerprinter(KEY))
    tally = bundle_module.Tally(engine.active_until)
    held: dict[bytes, bundle_module.Bundle] = {}
    now, cleanups, compact = 0.0, 0, tally._compact

    def counted() -> None:
        nonlocal cleanups
        cleanups += 1
        compact()

    tally._compact = counted  # type: ignore[method-assign]
    for step in range(30_000):
        key = b"k%d" % rng.randrange(400)
        if rng.random() < 0.05:
            tally.set(key, None)
            held.pop(key, None)
        else:
            sessions = {
                f"s{j}": SessionState(
                    start=now - rng.uniform(0, 600),
                    last=now + rng.uniform(-2400, 600),
                    guest=rng.random() < 0.3,
                    ended="logout" if rng.random() < 0.2 else None,
                )
                for j in range(rng.randrange(4))
            }
            b = bundle_module.Bundle(sessions=sessions, user=None)
            tally.set(key, b)
            held[key] = b
        if step % 97 == 0:
            now += rng.uniform(0, 60)
            census = tally.census(now)
            live = [
                s
                for b in held.values()
                for s in b.sessions.values()
                if engine.active_until(s) >= now
            ]
            assert census.user_sessions == sum(not s.guest for s in live)
            assert census.guest_sessions == sum(s.guest for s in live)
            assert census.entries["state"] == len(held)
            assert census.entries["sessions"] == sum(len(b.sessions) for b in held.values())
    assert cleanups > 10, cleanups
