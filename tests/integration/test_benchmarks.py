"""The benchmarks still run and measure what they say, at sizes that take seconds.

Speed is not asserted (bench/ prints ratios for people to compare); what is: each script
exits 0 and prints every figure, and the stream benchmark's checkpointed-state ceiling
writes each changed routing key's real state, once per checkpoint.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import subprocess
import sys
import uuid
from types import ModuleType

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from detector.events import Event, decode
from detector.fingerprint import Fingerprinter
from detector.simulate import benchmark_day
from detector.stream.bundle import decode_bundle
from detector.stream.routing import routing_key
from tests.integration.streaming import ROOT

NUMBER = r"([\d,]+(?:\.\d+)?)"


def bench(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def topic_names(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


def run(*args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def figures(out: str, label: str) -> list[float]:
    """The numbers on the output line that starts with ``label``."""
    for line in out.splitlines():
        if line.strip().startswith(label):
            rest = line.strip()[len(label) :]
            return [float(n.replace(",", "")) for n in re.findall(NUMBER, rest)]
    raise AssertionError(f"no line {label!r} in:\n{out}")


async def keyed_records(
    bootstrap: str, topic: str, partitions: int
) -> list[tuple[bytes, bytes | None]]:
    """Every (key, value) of ``topic``, read up to its end offsets."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        out: list[tuple[bytes, bytes | None]] = []
        pending = [tp for tp in parts if ends[tp] > 0]
        while pending:
            for records in (await consumer.getmany(*pending, timeout_ms=1000)).values():
                out.extend((r.key, r.value) for r in records if r.key is not None)
            pending = [tp for tp in pending if await consumer.position(tp) < ends[tp]]
        return out
    finally:
        await consumer.stop()


@pytest.mark.kafka
def test_stream_benchmark_ceilings_run_and_the_checkpoint_writes_each_changed_key_once(
    kafka_bootstrap: str,
) -> None:
    stream = bench("stream_throughput")
    events, partitions, tag = 4000, 2, uuid.uuid4().hex[:8]
    out = run(
        *("bench/stream_throughput.py", "--events", str(events)),
        *("--partitions", str(partitions)),
        *("--ceilings-only", "--checkpoint-seconds", "3600", "--tag", tag),
        "--keep-topics",  # its changelog is read below
        env={"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
    )
    assert figures(out, "events in topic")[-1] == events
    assert figures(out, "plain aiokafka consumer + JSON decode")[0] > 0
    rate, alerts, _ratio = figures(out, "same consumer + engine (no Faust)")
    assert rate > 0 and alerts > 0
    assert figures(out, "+ one changelog send per event")[0] > 0
    _every, merged_rate, _ratio, per_event = figures(out, "+ changed state written every")
    assert merged_rate > 0
    # The worker's engine path, without replay's compiled one. Not the same alert count:
    # one engine over every partition sees them interleaved as each fetch returns them.
    python_rate, python_alerts, _ratio = figures(out, "engine on its Python path only")
    assert python_rate > 0 and python_alerts > 0
    assert figures(out, "+ its changed state written every")[1] > 0

    # One checkpoint (the interval outlasts the run): each routing key of the input
    # exactly once, holding that key's state as the worker's bundles do.
    fp = Fingerprinter(stream.KEY.encode())
    expected = {
        routing_key(ev, fp).encode()
        for ev in map(decode, benchmark_day(events))
        if type(ev) is Event
    }
    written = asyncio.run(
        keyed_records(kafka_bootstrap, f"changelog-merged-events-{tag}", partitions)
    )
    assert sorted(k for k, _ in written) == sorted(expected)
    assert per_event == pytest.approx(len(expected) / events, abs=0.0005)
    live = 0
    for key, value in written:
        if value is None:  # expired by the end of the run: a tombstone
            continue
        live += 1
        bundle = decode_bundle(value)
        kind, name = key[:2], key[2:].decode()
        if kind == b"u:":
            assert bundle.user is not None
            assert set(bundle.sessions) == set(bundle.user.sessions)
            assert all(s.user == name for s in bundle.sessions.values())
        else:
            assert bundle.user is None and list(bundle.sessions) == [name]
    assert live > len(expected) // 2


@pytest.mark.kafka
def test_stream_benchmark_times_a_real_worker_and_its_alerts(kafka_bootstrap: str) -> None:
    """The whole benchmark at a size of seconds: floors and the live-rate search left out,
    the worker's catch-up timed by its own count, then paced traffic whose probes must
    come back as alerts. On a broker that outlives it, it deletes its topics at the end."""
    tag = uuid.uuid4().hex[:8]
    out = run(
        *("bench/stream_throughput.py", "--events", "20000", "--partitions", "2"),
        *("--no-floors", "--sustain-steps", "0", "--latency-rates", "100"),
        *("--latency-seconds", "4", "--tag", tag),
        env={"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
    )
    left = asyncio.run(topic_names(kafka_bootstrap))
    assert not [name for name in left if tag in name]
    worker = next(line for line in out.splitlines() if line.startswith("sessionwatch worker"))
    # 20,000 events can be taken between two samples of the count: then no rate (nan)
    assert "nan" in worker or figures(out, "sessionwatch worker")[0] > 0
    assert figures(out, "table writes per event, catching up")[0] > 0
    assert figures(out, "plain consumer again, after the worker")[0] > 0
    latency = re.search(r"at +100 events/s: p50 +(\d+) ms, p99 +(\d+) ms over (\d+) alerts", out)
    assert latency is not None, out
    p50, p99, alerts = map(int, latency.groups())
    assert 0 < p50 <= p99 and alerts > 0
    assert figures(out, "delivery holes in the worker's input") == [0, 0]


@pytest.mark.kafka
def test_scale_out_benchmark_prints_every_figure(kafka_bootstrap: str) -> None:
    """One and two plain consumers and workers on one topic, at a size of seconds; its
    topics (the workers' changelogs too) are deleted at the end."""
    tag = uuid.uuid4().hex[:8]
    out = run(
        *("bench/scale_out.py", "--events", "50000", "--partitions", "2", "--rounds", "1"),
        *("--tag", tag),
        env={"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
    )
    left = asyncio.run(topic_names(kafka_bootstrap))
    assert not [name for name in left if tag in name]
    assert figures(out, "events in topic")[-1] == 50000
    for n in (1, 2):
        assert figures(out, f"plain consumers x{n}: events/s")[0] > 0
        workers = next(line for line in out.splitlines() if line.startswith(f"workers x{n}:"))
        # all taken between two samples of the counts: then no rate (nan)
        assert "nan" in workers or figures(out, f"workers x{n}: events/s")[0] > 0
    assert figures(out, "plain consumers x2 / x1:")[0] > 0
    assert re.search(r"^workers x2 / x1: (nan|[\d.]+)$", out, re.M), out


def test_replay_benchmark_prints_every_figure() -> None:
    out = run(
        "bench/replay_throughput.py",
        *("--events", "3000", "--sessions", "1000", "--rounds", "1", "--days", "1"),
    )
    for label in (
        "replay, every rule",
        "ratio every rule / parse-only",
        "ratio compiled / Python path",
        "ratio example / parse-only",
        "ratio rules only / parse-only",
        "ratio model on / parse-only",
        "peak RSS,",
    ):
        assert figures(out, label)[-1] > 0, label


def test_state_scans_benchmark_prints_every_figure() -> None:
    """It also checks, itself, that the tally agrees with a recount of the table and that
    the re-index ends within its 1,000 events."""
    out = run("bench/state_scans.py", "--events", "20000", "--rounds", "1")
    for label in (
        "census per scrape, decode every entry",
        "census per scrape, tally",
        "rebalance, whole table at one event",
        "rebalance, longest event while spread",
    ):
        assert figures(out, label)[-1] > 0, label


def test_record_step_benchmark_prints_every_figure() -> None:
    """Both paths (the compiled one record by record and in runs) when the extension is
    built (CI builds it), else the Python path alone."""
    from detector.native import native_module

    built = native_module() is not None
    out = run(
        "bench/record_step.py",
        *("--events", "3000", "--rounds", "1", "--checkpoint-every", "500"),
        *(() if built else ("--path", "python")),
    )
    assert figures(out, "Python path")[-1] > 0
    if built:
        assert figures(out, "compiled path")[-1] > 0
        assert figures(out, "compiled, runs")[-1] > 0
        assert 0 < figures(out, "ratio compiled / Python")[-1] < 5
        assert 0 < figures(out, "ratio runs / compiled")[-1] < 5


def test_collector_pause_benchmark_finds_no_tracked_object_in_the_state() -> None:
    out = run("bench/collector_pause.py", "--events", "20000", "--rounds", "2")
    assert figures(out, "bundles decoded")[0] > 500
    assert figures(out, "tracked by the collector") == [0, 0]  # count and per bundle
    assert figures(out, "full collection, state held")[-1] > 0
    assert figures(out, "full collection, state let go")[-1] > 0
