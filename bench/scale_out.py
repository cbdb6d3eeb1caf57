"""Scale-out on one machine: one and two workers against one and two plain consumers.

Faust scales by processes (an agent's ``concurrency`` must stay 1), so the way to use a
second core is a second ``sessionwatch worker`` with the same app id. This measures what
that buys on this machine, and what the same number of plain consumers reach, so a
worker's ratio to the plain consumer is compared at equal processes.

Starts its own broker on 127.0.0.1 (or uses ``KAFKA_BOOTSTRAP_SERVERS``; the run's topics
are deleted at the end), fills a topic with simulated events, then reads it from its
start, in alternating rounds (the machine's other load moves every figure from minute to
minute):

- N plain aiokafka consumers, each assigned 1/N of the partitions, decoding each JSON
  value as stream_throughput.py's baseline does: all records over the time from the
  first one's start to the last one's end;
- N workers in a fresh consumer group (a new app id each run): their summed own count of
  events taken, from the first progress seen to all (rebalances included: the second
  worker joins while the first has started).

Usage::

    .venv/bin/python bench/scale_out.py [--events 1000000] [--processes 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stream_throughput import (
    decode_only,
    drop_run_topics,
    fill,
    processed_rate,
    settings_for,
    start_worker,
)

from detector.simulate import benchmark_day
from detector.stream.settings import StreamSettings


async def read_partitions(bootstrap: str, topic: str, parts: list[int]) -> tuple[int, float, float]:
    """Records of ``parts`` read from their start to their end offsets, decoded; with the
    start and end (``perf_counter``, one clock for all processes on Linux)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=4 << 20
    )
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in parts]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    ends = await consumer.end_offsets(tps)
    seen = 0
    start = time.perf_counter()
    try:
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batches.values():
                await decode_only(records)
                seen += len(records)
    finally:
        end = time.perf_counter()
        await consumer.stop()
    return seen, start, end


def _read(args: tuple[str, str, list[int]]) -> tuple[int, float, float]:
    return asyncio.run(read_partitions(*args))


def plain_rate(s: StreamSettings, processes: int) -> float:
    """Events/s of ``processes`` plain consumers splitting the partitions between them."""
    split = [list(range(s.partitions))[i::processes] for i in range(processes)]
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(processes, mp_context=context) as pool:
        done = list(pool.map(_read, [(s.bootstrap_servers, s.events_topic, p) for p in split]))
    seen = sum(n for n, _, _ in done)
    return seen / (max(e for _, _, e in done) - min(b for _, b, _ in done))


def worker_rate(s: StreamSettings, processes: int, total: int, run: str) -> float:
    """Events/s of ``processes`` workers of a fresh app id, by their summed own counts."""
    from tests.integration.streaming import free_port

    ws = copy.copy(s)
    ws.app_id = f"{s.app_id}-{run}"
    dirs = [Path(tempfile.mkdtemp(prefix="sw-scale-")) for _ in range(processes)]
    ports = [free_port() for _ in range(processes)]
    workers = [start_worker(ws, d, p) for d, p in zip(dirs, ports, strict=True)]
    try:
        return processed_rate(ports, total, 3600, every_s=0.25)
    finally:
        for w in workers:
            os.killpg(w.pid, signal.SIGTERM)
        for w in workers:
            w.wait(60)
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


def _joined(values: list[float], form: str) -> str:
    return " / ".join(form.format(v) for v in values)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--processes", type=int, default=2, help="the most processes tried")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tag", help="suffix of the run's topic names (default: random; must be new)")
    args = ap.parse_args()
    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        from broker import Broker

        broker = Broker().start()
        bootstrap = broker.bootstrap
    s = settings_for(bootstrap, args.tag or uuid.uuid4().hex[:6], args.partitions)
    try:
        lines = benchmark_day(args.events)
        asyncio.run(fill(s, lines))
        counts = range(1, args.processes + 1)
        plain: dict[int, list[float]] = {n: [] for n in counts}
        worker: dict[int, list[float]] = {n: [] for n in counts}
        for r in range(args.rounds):
            for n in counts:
                plain[n].append(plain_rate(s, n))
                worker[n].append(worker_rate(s, n, len(lines), f"r{r}n{n}"))
        print(f"events in topic ({args.partitions} partitions) {len(lines):>12,}")
        for n in counts:
            print(f"plain consumers x{n}: events/s   {_joined(plain[n], '{:,.0f}')}")
            print(f"workers x{n}: events/s           {_joined(worker[n], '{:,.0f}')}")
            ratios = [w / p for w, p in zip(worker[n], plain[n], strict=True)]
            print(f"ratio workers / plain, x{n}      {_joined(ratios, '{:.3f}')}")
        top = args.processes
        for name, by_count in (("plain consumers", plain), ("workers", worker)):
            gains = [b / a for a, b in zip(by_count[1], by_count[top], strict=True)]
            print(f"{name} x{top} / x1: {_joined(gains, '{:.2f}')}")
    finally:
        asyncio.run(drop_run_topics(s))
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
