"""What a scrape and a rebalance cost the worker's event loop, by the size of its state.

A worker's local table is filled the way the worker fills it (the simulated day, one
bundle per routing key, written at checkpoints), then:

1. a scrape's census: the tally kept as state is written, against the baseline of
   decoding every entry and counting live sessions (what the census did before);
2. a rebalance: the re-index read a few entries per event, against the baseline of
   reading the whole table at the partition's first event (what it did before): the
   longest any one event waits for it.

    python bench/state_scans.py [--events 1000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gc
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
from detector.store import ExpiryIndex, count_live
from detector.stream.app import FULL_COLLECTION_EVERY
from detector.stream.bundle import BundleStore, MappingIO, decode_bundle
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


if __name__ == "__main__":
    main()
