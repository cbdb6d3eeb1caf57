"""What the worker's decoded state adds to a full garbage collection.

A full collection walks every object the collector tracks, with the event loop stopped;
one comes every hundred younger ones and at every rebalance (Faust's RocksDB store
collects when partitions are revoked). This runs the worker's per-record step
(``detector.stream.records``, compiled path when built) over the first ``--events``
records of the benchmarks' simulated day with no checkpoint, so every bundle changed
stays decoded, as between two checkpoints of a worker catching up; then times
``gc.collect()`` with that state held and after the store let it go (the baseline, in
the same process), best of ``--rounds`` each, and counts the objects in the state that
the collector tracks. Usage::

    .venv/bin/python bench/collector_pause.py [--events 300000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from record_step import records, worker_step  # noqa: E402

from detector.native import native_wanted  # noqa: E402
from tests.tools import containers  # noqa: E402


def full_collection_ms(rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        gc.collect()
        best = min(best, time.perf_counter() - start)
    return best * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    runs = records(args.events)
    native = native_wanted() is not None  # the worker's choice
    (_, _, apply_run), store = worker_step(native)
    for run in runs:
        apply_run(run, run[0].partition)  # the worker's token: the partition
    del runs
    for _ in range(3):  # tuples are untracked by the collections that find them so
        gc.collect()
    held = len(store._loaded)
    walked = [gc.is_tracked(o) for b in store._loaded.values() for o in containers(b)]
    objects, tracked = len(walked), sum(walked)
    with_state = full_collection_ms(args.rounds)
    store.discard()  # what a rebalance does with bundles not written
    gc.collect()
    without = full_collection_ms(args.rounds)
    path = "compiled" if native else "Python"
    print(f"bundles decoded               {held:,} (the {path} path's)")
    print(f"objects in them               {objects:,}")
    print(f"tracked by the collector      {tracked:,} ({tracked / max(held, 1):.2f} per bundle)")
    print(f"full collection, state held   {with_state:7.1f} ms (best of {args.rounds})")
    print(f"full collection, state let go {without:7.1f} ms")
    print(f"the state's share             {with_state - without:7.1f} ms")


if __name__ == "__main__":
    main()
