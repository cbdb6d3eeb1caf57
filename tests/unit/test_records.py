"""The worker's per-record step (detector.stream.records) without Kafka: routine
transactions through the compiled path change speed only. Alerts, dead letters, the
table the checkpoints write and the metrics are the Python path's, record for record,
across checkpoints, re-deliveries after a crash and bad input."""

from __future__ import annotations

import gc
import io
import itertools
import random
import zlib
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from detector.alerts import Alert
from detector.engine import Engine
from detector.events import Event, InvalidEvent, decode
from detector.fastpath import BundlePath, bundle_path
from detector.fingerprint import Fingerprinter
from detector.metrics import LAG_BUCKETS, Metrics
from detector.simulate import SIM_CONFIG, Simulation
from detector.stream.bundle import BundleStore, MappingIO, decode_bundle
from detector.stream.records import record_applier
from detector.stream.routing import routing_key
from tests.helpers import KEY, SID, SID2, SID3, Story, decoded_records, policy
from tests.tools import containers
from tests.unit.test_fastpath import HAS_RUST, MODEL, TIGHT, _offline, ahead_of_now

if not HAS_RUST:  # no Rust here: the worker runs on the Python path alone
    pytest.importorskip("sessionwatch_native")

PARTITIONS = 8
TOPIC = "session-events"


class Run:
    """One worker over a plain mapping: records in, alerts, dead letters and the table out."""

    def __init__(
        self,
        cfg: dict[str, Any],
        native: bool,
        table: dict[bytes, bytes],
        runs: bool | str = False,
    ) -> None:
        # Feed records as the worker does: runs of one partition ("decoded": as the
        # extension decodes them from the fetch, else as the Kafka client does).
        self.runs = runs
        self.fp = Fingerprinter(KEY)
        self.engine = Engine(policy(cfg), self.fp, behaviour=_offline(cfg), sweep_every_s=60.0)
        self.table = table
        self.store = BundleStore(
            table,
            self.engine.session_expiry,
            self.engine.user_expiry,
            sweep_every_s=900.0,
            io=MappingIO(table),
            active_until=self.engine.active_until,
        )
        self.engine.store = self.store
        self.metrics = Metrics()
        self.alerts: list[str] = []
        self.dead: list[tuple[str, int]] = []
        self.failed: list[Exception] = []
        # The store's bookkeeping at each checkpoint: entries swept, the table's size,
        # the re-index going, the census.
        self.trace: list[tuple[Any, ...]] = []
        self.native: BundlePath | None = bundle_path(self.engine, LAG_BUCKETS) if native else None
        assert (self.native is not None) == native
        self.apply, self.fold, self.apply_run = record_applier(
            self.engine,
            self.store,
            self.metrics,
            self.publish,
            self.refuse,
            lambda exc, raw, msg: self.failed.append(exc),
            self.native,
        )

    def publish(self, alert: Alert, value: bytes) -> None:
        self.alerts.append(alert.alert_id)

    def refuse(self, invalid: InvalidEvent, raw: bytes, msg: Any) -> None:
        self.dead.append((invalid.reason, msg.offset))

    def feed(self, records: list[tuple[int, int, bytes]], checkpoint_every: int = 40) -> None:
        """``records``: (partition, offset, value); a checkpoint writes every bundle
        changed after each ``checkpoint_every`` of them, as the worker's full one does."""
        if self.runs:
            for start in range(0, len(records), checkpoint_every):
                block = records[start : start + checkpoint_every]
                for partition, run in itertools.groupby(block, key=lambda r: r[0]):
                    place: list[tuple[int, bytes | None]] = [(o, raw) for _, o, raw in run]
                    if self.runs == "decoded":
                        self.apply_run(decoded_records(TOPIC, partition, place), partition)
                    else:
                        self.apply_run([record(partition, o, raw) for o, raw in place], partition)
                if start + checkpoint_every <= len(records):
                    self.checkpoint()
        else:
            for i, (partition, offset, raw) in enumerate(records, 1):
                msg = SimpleNamespace(topic=TOPIC, partition=partition, offset=offset)
                self.apply(raw, msg, msg)
                if i % checkpoint_every == 0:
                    self.checkpoint()
        self.checkpoint()
        self.fold()

    def checkpoint(self) -> None:
        store = self.store
        store.flush()
        census = self.engine.census()
        self.trace.append((store.swept, len(self.table), store.scanning, census))


def record(partition: int, offset: int, value: bytes | None) -> SimpleNamespace:
    """A Kafka client record, as the worker's fetch hands it over."""
    return SimpleNamespace(topic=TOPIC, partition=partition, offset=offset, value=value)


def fetched(records: list[tuple[int, int, bytes]], size: int = 60) -> list[tuple[int, int, bytes]]:
    """``records`` in the order a worker's fetches give them: ``size`` at a time, each
    fetch's partition by partition (the order within a partition kept)."""
    out: list[tuple[int, int, bytes]] = []
    for start in range(0, len(records), size):
        out.extend(sorted(records[start : start + size], key=lambda r: r[0]))
    return out


def partitioned(lines: list[bytes]) -> list[tuple[int, int, bytes]]:
    """The records as ``sessionwatch produce`` would place them: by routing key, each
    partition's offsets counting from 0 (an invalid line goes to partition 0)."""
    fp = Fingerprinter(KEY)
    offsets = [0] * PARTITIONS
    records = []
    for line in lines:
        ev = decode(line)
        key = routing_key(ev, fp) if isinstance(ev, Event) else ""
        p = zlib.crc32(key.encode()) % PARTITIONS
        records.append((p, offsets[p], line))
        offsets[p] += 1
    return records


#: The deployed worker's model (examples/policy.toml): the compiled path also closes and
#: scores the behaviour windows.
OFFLINE = {**SIM_CONFIG, "behaviour": {"model": "offline", "path": MODEL}}


def day(users: int, hours: float, seed: int, junk: int = 0, attacks: int = 0) -> list[bytes]:
    buf = io.BytesIO()
    Simulation(users=users, hours=hours, seed=seed, behaviour_attacks=attacks).write(buf)
    lines = buf.getvalue().splitlines()
    rng = random.Random(seed)
    for _ in range(junk):  # bad input between the good: refused the same way
        bad = rng.choice(lines)
        bad = rng.choice([bad[: len(bad) // 2], bad.replace(b'"ip"', b'"ip":1,"x"', 1), b"{}"])
        lines.insert(rng.randrange(len(lines)), bad)
    return lines


def both(
    records: list[tuple[int, int, bytes]],
    cfg: dict[str, Any],
    crash_at: int | None = None,
    checkpoint_every: int = 40,
    runs: bool | str = False,
) -> tuple[Run, Run]:
    """The same records through the compiled and the Python path (``runs``: the compiled
    path takes them in runs of one partition, as the worker hands them over). ``crash_at``:
    the worker dies after that many records, its last checkpoint 25 records before, and
    a new one reads again from 150 records before the crash (a commit behind the state)."""
    out = []
    for native in (True, False):
        table: dict[bytes, bytes] = {}
        in_runs = runs if native else False
        run = Run(cfg, native, table, in_runs)
        if crash_at is None:
            run.feed(records, checkpoint_every)
        else:
            run.feed(records[: crash_at - 25])
            lost = Run(cfg, native, dict(table), in_runs)  # the unwritten state dies with it
            lost.alerts = run.alerts
            lost.feed(records[crash_at - 25 : crash_at], checkpoint_every=10**9)
            restarted = Run(cfg, native, table, in_runs)
            restarted.alerts = run.alerts
            restarted.dead = run.dead
            restarted.feed(records[crash_at - 150 :])
            run = restarted
        out.append(run)
    return out[0], out[1]


def assert_same(fast: Run, slow: Run) -> None:
    assert fast.alerts == slow.alerts
    assert fast.dead == slow.dead
    assert fast.table == slow.table  # every bundle, byte for byte
    assert fast.engine.watermark == slow.engine.watermark
    assert fast.engine._next_sweep == slow.engine._next_sweep  # its sweep clock
    assert fast.metrics.events == slow.metrics.events
    assert fast.metrics.lag.counts == slow.metrics.lag.counts
    assert not fast.failed and not slow.failed
    # The store's own bookkeeping too: event time per partition (expiry and sweeps
    # follow it), sweeps, the re-index after a rebalance, the census it keeps.
    f, s = fast.store, slow.store
    assert fast.trace == slow.trace
    assert f._marks == s._marks
    assert (f.swept, f.sweep_backlog, f.scans, f.scanning) == (
        s.swept,
        s.sweep_backlog,
        s.scans,
        s.scanning,
    )
    assert fast.engine.census() == slow.engine.census()


RUNS = pytest.mark.parametrize(
    "runs",
    [False, True, "decoded"],
    ids=["record by record", "in runs", "in runs, records decoded by the extension"],
)


@pytest.mark.parametrize("cfg", [SIM_CONFIG, TIGHT], ids=["simulation policy", "tight policy"])
@pytest.mark.parametrize("checkpoint_every", [40, 2000], ids=["frequent", "rare checkpoints"])
@RUNS
def test_a_simulated_day_is_the_python_paths_with_the_compiled_path(
    cfg: dict[str, Any], checkpoint_every: int, runs: bool | str
) -> None:
    """Rare checkpoints keep bundles loaded, so the compiled path's copies of sessions
    are used again across records, across Python writes between them. In runs, records
    handed back to the Python path fall between records applied in one call."""
    records = fetched(partitioned(day(300, 8, seed=41, junk=30)))
    fast, slow = both(records, cfg, checkpoint_every=checkpoint_every, runs=runs)
    assert_same(fast, slow)
    assert len(fast.alerts) > 20 and len(fast.dead) > 20  # real alerts and refusals
    # Most records went the compiled way (else this compares the Python path with itself).
    assert fast.native is not None and fast.native.applied > len(records) // 2


@pytest.mark.parametrize("checkpoint_every", [40, 2000], ids=["frequent", "rare checkpoints"])
@RUNS
def test_with_the_offline_model_windows_are_closed_and_scored_the_same(
    checkpoint_every: int, runs: bool | str
) -> None:
    records = fetched(partitioned(day(40, 120, seed=5, attacks=1)))
    fast, slow = both(records, OFFLINE, checkpoint_every=checkpoint_every, runs=runs)
    assert_same(fast, slow)
    assert fast.native is not None and fast.native.closed > 500
    assert fast.native.applied > len(records) // 2


@RUNS
def test_after_a_crash_re_delivered_records_are_not_applied_twice_on_either_path(
    runs: bool | str,
) -> None:
    records = fetched(partitioned(day(40, 48, seed=43)))
    fast, slow = both(records, OFFLINE, crash_at=len(records) // 2, runs=runs)
    assert_same(fast, slow)
    assert len(set(fast.alerts)) < len(fast.alerts)  # re-sent alerts, with the same ids
    # A record applied before the crash is refused by the bundle's offset: had the
    # compiled path applied it again, the sessions' state would differ from the above.
    assert fast.native is not None and fast.native.applied > 100


@RUNS
def test_after_a_rebalance_records_read_again_are_not_applied_twice_on_either_path(
    runs: bool | str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine runs on (its watermark moved), the unwritten state is dropped and the
    partitions are read again from a commit behind the state: the records the table
    already holds must be refused by the bundle's offset before the compiled path could
    apply them (their alerts re-sent), the others applied as the first time. The
    re-index of the table after the rebalance takes a few entries per record, so that it
    lasts many records, which the compiled path's runs must leave to the store's load."""
    monkeypatch.setattr("detector.stream.bundle.SCAN_PER_EVENT", 1)
    records = fetched(partitioned(day(40, 48, seed=43)))
    at = len(records) // 2
    runs_ = []
    for native in (True, False):
        run = Run(OFFLINE, native, {}, runs=runs if native else False)
        run.feed(records[:at])
        for partition, offset, raw in records[at : at + 25]:  # applied, never written
            msg = SimpleNamespace(topic=TOPIC, partition=partition, offset=offset)
            run.apply(raw, msg, msg)
        run.store.discard()
        run.store.reset()
        before = run.native.applied if run.native is not None else 0
        run.feed(records[at - 150 : at - 130])
        assert run.store.scanning  # the re-index goes on
        run.feed(records[at - 130 :])
        runs_.append((run, (run.native.applied if run.native is not None else 0) - before))
    (fast, applied_again), (slow, _) = runs_
    assert_same(fast, slow)
    assert fast.store.scans == 2 and not fast.store.scanning
    assert applied_again > 100  # the compiled path was at work on the records read again
    assert len(set(fast.alerts)) < len(fast.alerts)  # re-sent, with the same ids


def test_a_guest_session_is_found_under_its_fingerprint_and_a_user_s_under_the_name() -> None:
    s = Story()
    # Within a minute of event time: a record that makes the engine's sweep due (one a
    # minute in the worker) is the Python path's.
    s.login(0)
    s.tx(0.1)
    s.tx(0.2)
    s.add("transaction", 0.1, session_id="GUEST-SESSION-0001", ip="10.1.2.3", guest=True)
    s.add("transaction", 0.2, session_id="GUEST-SESSION-0001", ip="10.1.2.3", guest=True)
    s.add("transaction", 0.3, session_id="GUEST-SESSION-0001", ip="10.1.2.3", guest=True)
    records = partitioned(s.lines())
    fast, slow = both(records, SIM_CONFIG)
    assert_same(fast, slow)
    # Both of the user's requests and the guest's last two (its first opens the session).
    assert fast.native is not None and fast.native.applied == 4
    assert {k[:2] for k in fast.table} == {b"u:", b"s:"}


def test_a_record_applied_natively_marks_its_bundle_for_the_next_checkpoint() -> None:
    s = Story()
    s.login(0)
    s.tx(0.5, node="node-b")
    run = Run(SIM_CONFIG, True, {})
    run.feed(partitioned(s.lines()[:1]))
    written = dict(run.table)
    run.feed([(p, 1, raw) for p, _, raw in partitioned(s.lines()[1:])])
    assert run.native is not None and run.native.applied == 1
    assert run.table != written  # the transaction's changes were written
    (bundle,) = (run.store.peek(k) for k in run.table)
    assert bundle is not None and bundle.offset == 1
    (session,) = bundle.sessions.values()
    assert session.node == "node-b" and session.last == s.events[1]["ts"]


def test_a_login_counts_only_the_sessions_its_bundle_still_holds() -> None:
    """A kept copy can outlive its session: a remember-me session dropped from the
    bundle after its retention is not one of the user's live sessions any more, and the
    compiled login must list only what the bundle holds, as the Python path does."""
    cfg = {
        **SIM_CONFIG,
        "policy": {**SIM_CONFIG["policy"], "glide.ui.active.session.life_span": 0},
        "detector": {**SIM_CONFIG["detector"], "remember_me_retention_days": 1},
    }
    s = Story()
    s.login(0, sid=SID, remember_me=True)
    s.tx(0.1, sid=SID)  # compiled: its copy is kept
    day_later = 24 * 60 + 60
    s.login(day_later, sid=SID2, user="bob")  # moves event time: the sweep is Python's
    s.login(day_later + 0.1, sid=SID3)  # compiled: the first session was dropped on load
    records = [(0, offset, raw) for offset, raw in enumerate(s.lines())]
    fast, slow = both(records, cfg, checkpoint_every=100)
    assert_same(fast, slow)
    assert fast.native is not None and fast.native.applied == 2
    bundle = fast.store.peek(b"u:alice")
    assert bundle is not None and bundle.user is not None
    assert len(bundle.user.sessions) == 1  # C alone


@pytest.mark.parametrize("native", [True, False], ids=["compiled", "python"])
def test_unreadable_state_stops_the_record_on_both_paths_alike(native: bool) -> None:
    """A stored entry that cannot be decoded is the state's fault, not the record's: it
    is raised, not dead-lettered, whichever path loads it."""
    s = Story()
    s.login(0, sid=SID2, user="bob")  # event time starts: the compiled path may run
    s.tx(0.1)
    run = Run(SIM_CONFIG, native, {})
    (first, second) = [(0, offset, raw) for offset, raw in enumerate(s.lines())]
    run.feed([first])  # the re-index after start-up has read the (empty) table
    run.table[b"u:alice"] = b"\xc1 not msgpack"
    with pytest.raises(msgspec.DecodeError):
        run.feed([second])
    assert not run.dead and not run.failed


def test_what_the_api_shows_before_a_checkpoint_is_the_python_paths() -> None:
    """The compiled path keeps a session's changes in its copies until the store asks;
    the review API reads bundles not written yet (``peek``), and must see them."""
    records = partitioned(day(40, 24, seed=47))
    shown = []
    for native in (True, False):
        run = Run(OFFLINE, native, {})
        for partition, offset, raw in records:
            msg = SimpleNamespace(topic=TOPIC, partition=partition, offset=offset)
            run.apply(raw, msg, msg)
        keys = sorted(run.store._pending)  # changed, none written
        assert len(keys) > 30
        shown.append({key: msgspec.msgpack.encode(run.store.peek(key)) for key in keys})
        if native:
            assert run.native is not None and run.native.applied > len(records) // 2
    assert shown[0] == shown[1]


@pytest.mark.parametrize("native", [True, False], ids=["compiled path", "Python path"])
def test_the_state_held_decoded_is_not_walked_by_full_garbage_collections(native: bool) -> None:
    """A full collection walks every object the collector tracks. With the state's
    containers as lists, the bundles a worker holds decoded (~30,000 catching up) made
    each one ~100 ms longer, and one comes at every rebalance (Faust's RocksDB store
    collects when partitions are revoked). Tuples of strings and bytes, dicts of them
    and structs without ``gc`` are not tracked, whichever path wrote them."""
    run = Run(OFFLINE, native, {})
    for partition, offset, raw in partitioned(day(60, 24, seed=53)):  # none written
        msg = SimpleNamespace(topic=TOPIC, partition=partition, offset=offset)
        run.apply(raw, msg, partition)
    for _ in range(3):  # each collection untracks the tuples whose items are untracked:
        gc.collect()  # the outbox's, (offset, (alert, ...)), after the third
    held = list(run.store._loaded.values())
    users = [b.user for b in held if b.user is not None]
    # what used to be lists is there: live sessions, baselines' networks and browsers,
    # the alerts kept to re-send
    assert sum(len(u.sessions) for u in users) > 20
    assert sum(len(u.baseline.networks) for u in users if u.baseline is not None) > 20
    assert sum(len(u.baseline.browsers) for u in users if u.baseline is not None) > 20
    assert sum(len(b.outbox) for b in held) > 5
    tracked = [type(o).__name__ for b in held for o in containers(b) if gc.is_tracked(o)]
    assert tracked == []
    # each changed one waiting for its write, untracked too
    assert len(run.store._pending) > 0.9 * len(held)
    assert not any(gc.is_tracked(entry) for entry in run.store._pending.values())
    if native:
        assert run.native is not None and run.native.applied > 1000


def test_with_the_concurrency_rule_off_users_keep_no_session_list() -> None:
    """A user's list of sessions is the concurrency rule's: each login there drops the
    dead ones. With the rule off (the default) nothing shortened it, so a user who never
    logged out carried one entry per login for good, in every write of their state."""
    off = {**SIM_CONFIG, "detector": {**SIM_CONFIG["detector"], "max_concurrent_sessions": 0}}
    fast, slow = both(partitioned(day(40, 24, seed=59)), off)
    assert_same(fast, slow)
    users = [decode_bundle(v).user for k, v in fast.table.items() if k.startswith(b"u:")]
    assert len(users) > 30
    assert all(u is not None and u.sessions == () for u in users)
    # with the rule on the lists are kept (each login prunes its user's)
    fast, _ = both(partitioned(day(40, 24, seed=59)), SIM_CONFIG)
    on = [decode_bundle(v) for k, v in fast.table.items() if k.startswith(b"u:")]
    assert any(b.user is not None and b.user.sessions for b in on)


@RUNS
def test_a_record_without_a_value_is_refused_and_the_rest_applied(runs: bool | str) -> None:
    """A tombstone (or ``kcat -Z`` with an empty message) on the events topic has no
    value at all: dead-lettered as not JSON on every path, the worker going on."""
    s = Story()
    s.login(0)
    s.tx(0.1)
    s.tx(0.2)
    values: list[Any] = s.lines()
    values.insert(2, None)
    records = [(0, offset, value) for offset, value in enumerate(values)]
    fast, slow = both(records, SIM_CONFIG, runs=runs)
    assert_same(fast, slow)
    assert fast.dead == [("not_json", 2)]
    assert fast.native is not None and fast.native.applied == 2


@RUNS
def test_events_dated_ahead_of_the_host_s_clock_are_refused_and_change_nothing(
    runs: bool | str,
) -> None:
    """As in replay (test_fastpath): refused as a bad time on both paths, the alerts and
    the table those of the day without them. The compiled path must refuse them itself
    here: a record whose partition's sweep falls due is loaded through the store and
    then applied in the extension."""
    lines = day(60, 24, seed=5)
    with_them, at = ahead_of_now(lines)
    records = fetched(partitioned(with_them))
    fast, slow = both(records, SIM_CONFIG, runs=runs)
    assert_same(fast, slow)
    clean_fast, _ = both(fetched(partitioned(lines)), SIM_CONFIG, runs=runs)
    assert sorted(fast.alerts) == sorted(clean_fast.alerts)
    assert _offsetless(fast.table) == _offsetless(clean_fast.table)
    ahead = {(p, o) for p, o, raw in records if b'"ahead-' in raw}
    assert len(ahead) == len(at) == 2
    assert sorted(r for r in fast.dead) == sorted(("bad_time", o) for _, o in ahead)


def _offsetless(table: dict[bytes, bytes]) -> dict[bytes, Any]:
    """The table's bundles without the source offsets (records put in between move
    them), the outboxes' included."""
    out = {}
    for key, raw in table.items():
        b = decode_bundle(raw)
        out[key] = msgspec.structs.replace(b, offset=0, outbox=tuple(a for _, a in b.outbox))
    return out


class _FlakyRecord:
    """A record whose offset cannot be read the first time: an error inside a run that
    is not the record's nor the state's."""

    def __init__(self, offset: int, value: bytes) -> None:
        self.topic, self.partition, self._offset, self.value = TOPIC, 0, offset, value
        self.failures = 1

    @property
    def offset(self) -> int:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("not this time")
        return self._offset


def test_an_error_inside_a_run_goes_on_record_by_record_applying_none_twice() -> None:
    s = Story()
    s.login(0)  # the engine's first event: the Python path's
    for minute in (0.1, 0.2, 0.3, 0.4):
        s.tx(minute)
    lines = s.lines()
    slow = Run(SIM_CONFIG, False, {})
    slow.feed([(0, offset, raw) for offset, raw in enumerate(lines)])
    fast = Run(SIM_CONFIG, True, {}, runs=True)
    records: list[Any] = [record(0, offset, raw) for offset, raw in enumerate(lines)]
    records[3] = _FlakyRecord(3, lines[3])  # after two records applied in the run
    fast.apply_run(records, 0)
    fast.checkpoint()
    fast.fold()
    assert_same(fast, slow)
    assert records[3].failures == 0  # the error happened
    # 1 and 2 in the run, 3 and 4 one by one after it; 1 and 2 found applied before
    assert fast.native is not None and fast.native.applied == 4


def test_a_run_leaves_the_re_index_after_a_rebalance_to_the_store_s_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While the table is re-indexed, every record's load reads a few of its entries, so
    the compiled path's runs do not load bundles themselves then."""
    monkeypatch.setattr("detector.stream.bundle.SCAN_PER_EVENT", 1)
    table: dict[bytes, bytes] = {}
    Run(SIM_CONFIG, False, table).feed(partitioned(day(300, 4, seed=9)))
    assert len(table) > 80
    s = Story()
    s.login(0)
    for i in range(1, 61):
        s.tx(i / 10)
    lines = s.lines()
    counted = []
    for native in (True, False):
        run = Run(SIM_CONFIG, native, dict(table), runs=native)
        run.apply_run([record(0, offset, raw) for offset, raw in enumerate(lines)], 0)
        census = run.engine.census()
        counted.append((census.entries["state"], run.store.scanning))
        assert run.native is None or run.native.applied > 40
    assert counted[0] == counted[1] == (61, True)  # an entry per record so far
