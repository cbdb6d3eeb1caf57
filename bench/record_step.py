"""The worker's per-record step in process: the compiled path against the Python path.

Runs ``detector.stream.records`` (what the worker does with each record of
``session-events``, apart from Kafka) over a plain mapping with the deployed policy and
behaviour model, on the first ``--events`` records of the simulated day, spread over 8
partitions by routing key, with the worker's rolling checkpoints (a write of everything
every ``--checkpoint-every`` records). Prints microseconds per record for each path, best
of ``--rounds``, and their ratio measured in the same run (the machine is shared and
noisy: only the ratio means anything). Usage::

    .venv/bin/python bench/record_step.py [--events 300000] [--rounds 3]

Instructions per record, which do not depend on the machine's load: run it under
callgrind twice, with and without ``--setup-only``, and divide the difference by the
events (``bench/record_instructions.sh`` does that).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detector.engine import Engine  # noqa: E402
from detector.events import Event, decode  # noqa: E402
from detector.fastpath import bundle_path  # noqa: E402
from detector.fingerprint import Fingerprinter  # noqa: E402
from detector.metrics import LAG_BUCKETS, Metrics  # noqa: E402
from detector.policy import Policy  # noqa: E402
from detector.simulate import benchmark_day  # noqa: E402
from detector.stream.bundle import BundleStore, MappingIO  # noqa: E402
from detector.stream.records import record_applier  # noqa: E402
from detector.stream.routing import routing_key  # noqa: E402

KEY = b"bench-record-step-key-0123456789"
PARTITIONS = 8
POLICY = ROOT / "examples" / "policy.toml"


def records(events: int) -> list[tuple[SimpleNamespace, bytes]]:
    """The benchmarks' simulated day's first ``events`` lines (``benchmark_day``), each
    with its partition and offset."""
    fp = Fingerprinter(KEY)
    offsets = [0] * PARTITIONS
    out = []
    for line in benchmark_day(events):
        ev = decode(line)
        key = routing_key(ev, fp) if isinstance(ev, Event) else ""
        p = zlib.crc32(key.encode()) % PARTITIONS
        out.append((SimpleNamespace(topic="session-events", partition=p, offset=offsets[p]), line))
        offsets[p] += 1
    return out


def worker_step(native: bool) -> tuple[Callable[..., None], Callable[[], None], BundleStore]:
    """A fresh worker step over a plain mapping, the deployed policy and model:
    ``apply(raw, msg, token)``, the fold of the compiled path's counts, and the store."""
    engine = Engine(Policy.load(POLICY), Fingerprinter(KEY), sweep_every_s=60.0)
    table: dict[bytes, bytes] = {}
    store = BundleStore(
        table,
        engine.session_expiry,
        engine.user_expiry,
        sweep_every_s=900.0,
        io=MappingIO(table),
        active_until=engine.active_until,
    )
    engine.store = store
    path = bundle_path(engine, LAG_BUCKETS) if native else None
    if native and path is None:
        sys.exit("the compiled path is not built (make install) or SESSIONWATCH_NATIVE=0")

    def ignore(*args: Any) -> None:
        pass

    apply, fold = record_applier(engine, store, Metrics(), ignore, ignore, ignore, path)
    return apply, fold, store


def one_run(recs: list[tuple[SimpleNamespace, bytes]], native: bool, every: int) -> float:
    """Seconds for all of ``recs`` through a fresh worker step (compiled path or not)."""
    apply, fold, store = worker_step(native)
    gc.collect()
    start = time.perf_counter()
    for i, (msg, raw) in enumerate(recs, 1):
        apply(raw, msg, msg.partition)  # the worker's token: the partition
        if i % every == 0:
            store.flush()
    store.flush()
    fold()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--checkpoint-every", type=int, default=10_000)
    ap.add_argument("--path", choices=["both", "compiled", "python"], default="both")
    ap.add_argument("--setup-only", action="store_true", help="read the records, run none")
    args = ap.parse_args()
    recs = records(args.events)
    paths = {"both": [False, True], "compiled": [True], "python": [False]}[args.path]
    if args.setup_only:  # everything but the records: a worker step built, none run
        for native in paths:
            for _ in range(args.rounds):
                one_run([], native, args.checkpoint_every)
        return
    best = {native: float("inf") for native in paths}
    for _ in range(args.rounds):
        for native in paths:  # alternating, so both see the same hours of the machine
            best[native] = min(best[native], one_run(recs, native, args.checkpoint_every))
    n = len(recs)
    for native in paths:
        label = "compiled path" if native else "Python path"
        print(f"{label:<14} {best[native] / n * 1e6:7.2f} us per record (best of {args.rounds})")
    if len(paths) == 2:
        print(f"ratio compiled / Python        {best[True] / best[False]:.2f}")


if __name__ == "__main__":
    main()
