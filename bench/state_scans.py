"""What a scrape and a rebalance cost the worker's event loop, by the size of its state.

A worker's local table is filled the way the worker fills it (the simulated day, one
bundle per routing key, written at checkpoints), then:

1. a scrape's census: the tally kept as state is written, against the baseline of
   decoding every entry and counting live sessions (what the census did before);
2. a rebalance: the re-index read a few entries per event, against the baseline of
   reading the whole table at the partition's first event (what it did before): the
   longest any one event waits for it;
3. a state write's census bookkeeping (the tally) in a table of ``--entries`` entries,
   few of them live, while the live ones are rewritten: its clean-up of the leftovers
   of rewrites, against the baseline of rebuilding from every entry (what it did
   before): the longest write, and the mean.

    python bench/state_scans.py [--events 1000000] [--rounds 3] [--entries 1000000]
"""

from __future__ import annotations

import argparse
import gc
import heapq
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.engine import Engine
from detector.events import Event, decode
from detector.fingerprint import Fingerprinter
from detector.policy import Policy
from detector.simulate import benchmark_day
from detector.state import SessionState
from detector.store import ExpiryIndex, count_live
from detector.stream.app import FULL_COLLECTION_EVERY
from detector.stream.bundle import Bundle, BundleStore, MappingIO, Tally, decode_bundle
from detector.stream.routing import routing_key

CHECKPOINT_EVENTS = 5000


def filled(events: int) -> tuple[Engine, BundleStore, dict[bytes, bytes], list[Event]]:
    """A worker's engine and state after ``events`` of the benchmarks' simulated day
    (``benchmark_day``), on 8 partitions; and the day's last 1,000
    events again, to process after a rebalance."""
    lines = benchmark_day(events)
    fp = Fingerprinter(b"benchmark-key")
    engine = Engine(Policy(), fp)
    table: dict[bytes, bytes] = {}
    store = BundleStore(
        table,
        engine.session_expiry,
        engine.user_expiry,
        io=MappingIO(table),
        active_until=engine.active_until,
    )
    engine.store = store
    decoded = [ev for ev in map(decode, lines) if isinstance(ev, Event)]
    for offset, ev in enumerate(decoded):
        key = routing_key(ev, fp)
        store.load(key, hash(key) % 8, offset, ev.epoch)
        engine.process(ev)
        store.applied(offset, [])
        store.save()
        if offset % CHECKPOINT_EVENTS == 0:
            store.flush()
    store.flush()
    return engine, store, table, decoded[-1000:]


def decode_all_census(engine: Engine, table: dict[bytes, bytes]) -> tuple[int, int]:
    """The baseline census: every entry decoded, its live sessions counted."""
    now = engine.watermark
    sessions = [s for raw in table.values() for s in decode_bundle(raw).sessions.values()]
    return count_live(sessions, lambda s: engine.is_active(s, now))


def whole_table_index(store: BundleStore, table: dict[bytes, bytes]) -> None:
    """The baseline re-index: every entry decoded and filed at one event."""
    index: dict[int, ExpiryIndex[bytes]] = {}
    for key, raw in table.items():
        b = decode_bundle(raw)
        index.setdefault(b.partition, ExpiryIndex()).touch(key, partial(store._expiry, b))


class RebuiltTally(Tally):
    """The tally as it was: its heap's leftovers dropped by rebuilding from every entry."""

    def _compact(self) -> None:
        self._heap = [
            (until, g, k, guest)
            for k, (g, _, _, live) in self._of.items()
            for until, guest in live
            if until >= self._now
        ]
        heapq.heapify(self._heap)


def tally_writes(
    kind: type[Tally], engine: Engine, entries: int, live: int, writes: int
) -> tuple[float, float]:
    """The longest and the mean :meth:`Tally.set` while ``live`` keys of ``entries`` are
    rewritten ``writes`` times, each a session active a minute later than before; the
    other entries hold one ended session each (kept for the state retention)."""
    tally = kind(engine.active_until)
    ended = SessionState(start=0.0, last=0.0, user="u", ended="logout", ended_at=0.0)
    for i in range(entries - live):
        tally.set(b"d%d" % i, Bundle(sessions={"s": ended}))
    keys = [b"l%d" % i for i in range(live)]
    worst, total = 0.0, 0.0
    clock = time.perf_counter
    for n in range(writes):
        b = Bundle(sessions={"s": SessionState(start=0.0, last=60.0 * (n // live), user="u")})
        t = clock()
        tally.set(keys[n % live], b)
        took = clock() - t
        total += took
        worst = max(worst, took)
    census = tally.census(60.0 * (writes // live) - 1.0)
    assert (census.user_sessions, census.entries["state"]) == (live, entries), census
    return worst, total / writes


def best(rounds: int, run: object) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        run()  # type: ignore[operator]
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--entries", type=int, default=1_000_000)
    args = ap.parse_args()
    engine, store, table, again = filled(args.events)
    # The worker's collector settings: what exists by now is frozen, full collections rare.
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)
    tally = tuple(engine.census())[:2]
    assert tally == decode_all_census(engine, table), "tally and recount disagree"
    print(
        f"state after {args.events:,} events: {len(table):,} entries, "
        f"{sum(map(len, table.values())) / 1e6:.1f} MB"
    )

    base = best(args.rounds, lambda: decode_all_census(engine, table))
    kept = best(args.rounds, engine.census)
    print(f"census per scrape, decode every entry   {base * 1e3:>10.2f} ms")
    print(
        f"census per scrape, tally                {kept * 1e3:>10.4f} ms  "
        f"({base / kept:,.0f} x less)"
    )

    whole = best(args.rounds, lambda: whole_table_index(store, table))
    longest = []
    for _ in range(args.rounds):
        store.reset()
        worst = 0.0
        for offset, ev in enumerate(again, start=10**9):
            key = routing_key(ev, engine.fingerprint)
            t = time.perf_counter()
            store.load(key, hash(key) % 8, offset, ev.epoch)
            engine.process(ev)
            store.applied(offset, [])
            store.save()
            worst = max(worst, time.perf_counter() - t)
        store.discard()
        longest.append(worst)
    spread = min(longest)
    print(f"rebalance, whole table at one event     {whole * 1e3:>10.2f} ms")
    print(
        f"rebalance, longest event while spread   {spread * 1e3:>10.2f} ms  "
        f"({whole / spread:,.1f} x less)"
    )
    assert store._scanning is None, "the re-index did not end within 1,000 events"

    live, writes = 10_000, 100_000
    results: dict[type[Tally], tuple[float, float]] = {}
    for _ in range(args.rounds):  # alternating, so both see the same hours of the machine
        for kind in (RebuiltTally, Tally):
            worst, mean = tally_writes(kind, engine, args.entries, live, writes)
            old = results.get(kind, (float("inf"), float("inf")))
            results[kind] = (min(old[0], worst), min(old[1], mean))
    (old_worst, old_mean), (new_worst, new_mean) = results[RebuiltTally], results[Tally]
    print(f"state write's tally, {args.entries:,} entries, {live:,} live, {writes:,} writes:")
    print(
        f"  rebuilt from every entry: longest {old_worst * 1e3:8.2f} ms, "
        f"mean {old_mean * 1e6:6.2f} us"
    )
    print(
        f"  heap filtered:            longest {new_worst * 1e3:8.2f} ms, "
        f"mean {new_mean * 1e6:6.2f} us  "
        f"({old_worst / new_worst:,.1f} x shorter, {old_mean / new_mean:,.1f} x less)"
    )


if __name__ == "__main__":
    main()
