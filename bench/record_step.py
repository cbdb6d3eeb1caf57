"""The worker's per-record step in process: the compiled path against the Python path.

Runs ``detector.stream.records`` (what the worker does with each record of
``session-events``, apart from Kafka) over a plain mapping with the deployed policy and
behaviour model, on the first ``--events`` records of the simulated day, spread over 8
partitions by routing key and ordered as a worker's fetches hand them over (runs of up
to 100 records of one partition), with the worker's rolling checkpoints (a write of
everything every ``--checkpoint-every`` records). The compiled path runs twice: record
by record (``apply``) and a run per call (``apply_run``, as the worker does). Prints
microseconds per record for each, best of ``--rounds``, and the ratios measured in the
same run (the machine is shared and noisy: only the ratios mean anything). Usage::

    .venv/bin/python bench/record_step.py [--events 300000] [--rounds 3]

Instructions per record, which do not depend on the machine's load: run it under
callgrind twice, with and without ``--setup-only``, and divide the difference by the
events (``bench/record_instructions.sh`` does that).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import sys
import time
import zlib
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
from detector.native import native_module  # noqa: E402
from detector.policy import Policy  # noqa: E402
from detector.simulate import benchmark_day  # noqa: E402
from detector.stream.bundle import BundleStore, MappingIO  # noqa: E402
from detector.stream.records import Applier, record_applier  # noqa: E402
from detector.stream.routing import routing_key  # noqa: E402

KEY = b"bench-record-step-key-0123456789"
PARTITIONS = 8
POLICY = ROOT / "examples" / "policy.toml"


#: Records of one partition handed over at a time (``detector.stream.app.DIRECT_CHUNK``).
RUN = 100


def records(events: int) -> list[list[SimpleNamespace]]:
    """The benchmarks' simulated day's first ``events`` lines (``benchmark_day``) as Kafka
    client records (partition, offset, value), in runs of one partition as fetched:
    ``RUN * PARTITIONS`` records at a time, partition by partition."""
    fp = Fingerprinter(KEY)
    offsets = [0] * PARTITIONS
    arrived = []
    for line in benchmark_day(events):
        ev = decode(line)
        key = routing_key(ev, fp) if isinstance(ev, Event) else ""
        p = zlib.crc32(key.encode()) % PARTITIONS
        arrived.append(
            SimpleNamespace(topic="session-events", partition=p, offset=offsets[p], value=line)
        )
        offsets[p] += 1
    runs = []
    for start in range(0, len(arrived), RUN * PARTITIONS):
        fetch = sorted(arrived[start : start + RUN * PARTITIONS], key=lambda r: r.partition)
        for _, run in itertools.groupby(fetch, key=lambda r: r.partition):
            runs.append(list(run))
    return runs


def decoded(runs: list[list[SimpleNamespace]]) -> list[list[Any]]:
    """The runs as the worker gets them from a fetch by default: decoded by the extension
    from record batches (``detector.stream.fetch``), not made by the Kafka client."""
    from tests.helpers import decoded_records

    return [
        decoded_records(run[0].topic, run[0].partition, [(r.offset, r.value) for r in run])
        for run in runs
    ]


def worker_step(native: bool) -> tuple[Applier, BundleStore]:
    """A fresh worker step over a plain mapping, the deployed policy and model: its
    ``apply``, ``fold`` and ``apply_run``, and the store."""
    engine = Engine(Policy.load(POLICY), Fingerprinter(KEY), sweep_every_s=60.0)
    table: dict[bytes, bytes] = {}
    store = BundleStore(
        table,
        engine.session_expiry,
        engine.user_expiry,
        sweep_every_s=900.0,
        io=MappingIO(table),
        active_until=engine.active_until,
        active_terms=engine.active_terms(),
    )
    engine.store = store
    path = bundle_path(engine, LAG_BUCKETS) if native else None
    if native and path is None:
        sys.exit("the compiled path is not built (make install) or SESSIONWATCH_NATIVE=0")

    def ignore(*args: Any) -> None:
        pass

    return record_applier(engine, store, Metrics(), ignore, ignore, ignore, path), store


def one_run(runs: list[list[SimpleNamespace]], way: str, every: int) -> float:
    """Seconds for all of ``runs`` through a fresh worker step: ``way`` is "python",
    "compiled" (record by record) or "runs" (compiled, a run per call)."""
    (apply, fold, apply_run), store = worker_step(way != "python")
    gc.collect()
    start = time.perf_counter()
    since = 0
    for run in runs:
        partition = run[0].partition  # the worker's token: the partition
        if way == "runs":
            apply_run(run, partition)
        else:
            for record in run:
                apply(record.value, record, partition)
        since += len(run)
        if since >= every:
            store.flush()
            since = 0
    store.flush()
    fold()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--checkpoint-every", type=int, default=10_000)
    ap.add_argument("--path", choices=["all", "runs", "compiled", "python"], default="all")
    ap.add_argument("--setup-only", action="store_true", help="read the records, run none")
    ap.add_argument(
        "--records",
        choices=["decoded", "client"],
        default="decoded",
        help="records as the extension decodes them from a fetch (the worker's default)"
        " or as the Kafka client makes them",
    )
    args = ap.parse_args()
    runs: list[list[Any]] = records(args.events)
    if args.records == "decoded" and native_module() is not None:
        runs = decoded(runs)
    ways = ["python", "compiled", "runs"] if args.path == "all" else [args.path]
    if args.setup_only:  # everything but the records: a worker step built, none run
        for way in ways:
            for _ in range(args.rounds):
                one_run([], way, args.checkpoint_every)
        return
    best = {way: float("inf") for way in ways}
    for _ in range(args.rounds):
        for way in ways:  # alternating, so all see the same hours of the machine
            best[way] = min(best[way], one_run(runs, way, args.checkpoint_every))
    n = sum(map(len, runs))
    labels = {"python": "Python path", "compiled": "compiled path", "runs": "compiled, runs"}
    for way in ways:
        print(f"{labels[way]:<15} {best[way] / n * 1e6:7.2f} us per record (best of {args.rounds})")
    if len(ways) == 3:
        print(f"ratio compiled / Python         {best['compiled'] / best['python']:.2f}")
        print(f"ratio runs / compiled           {best['runs'] / best['compiled']:.2f}")


if __name__ == "__main__":
    main()
