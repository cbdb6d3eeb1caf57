"""The streaming worker against a real Kafka broker: equivalence, bad input, outside clients."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions
from aiokafka.partitioner import DefaultPartitioner

from detector.events import decode
from detector.fingerprint import Fingerprinter
from detector.simulate import Simulation
from detector.stream.bundle import SCAN_PER_EVENT
from detector.stream.routing import routing_key
from tests.integration.streaming import (
    KEY,
    POLICY,
    ROOT,
    Deployment,
    Expected,
    Factory,
    alert_ids,
    call_api,
    collect_records,
    create_topic,
    free_port,
    produce_in_transactions,
    send_tombstone,
    simulated_day,
)
from tests.tools import samples, scrape, total

pytestmark = pytest.mark.kafka


@pytest.mark.parametrize(("partitions", "delivery"), [(1, "fetch"), (8, "fetch"), (8, "stream")])
def test_stream_alerts_equal_replay_alerts(
    deployment_factory: Factory, tmp_path: Path, partitions: int, delivery: str
) -> None:
    """The default delivery takes a fetch's records at once; "stream", Faust's agent
    stream in take_events batches, is the fallback (SESSIONWATCH_DELIVERY)."""
    day, expected = simulated_day(tmp_path)
    assert len(expected) > 20
    d = deployment_factory(partitions)
    d.env["SESSIONWATCH_DELIVERY"] = delivery
    d.produce(day)
    d.start_worker()
    got = d.collect(d.topics["alerts"], lambda v: len(alert_ids(v)) >= len(expected))
    assert alert_ids(got) == expected, d.logs()
    # Each alert in the partition the Kafka client's partitioner gives its key (the
    # session's fingerprint), as a keyed send would put it: a session's alerts together.
    records = collect_records(d.bootstrap, d.topics["alerts"], len(got))
    assert len(records) == len(got)
    hashed = DefaultPartitioner()
    everywhere = list(range(partitions))
    assert all(
        r.partition == hashed(r.key, everywhere, everywhere)
        and r.key == orjson.loads(r.value)["session"].encode()
        for r in records
    )
    # Enforce-mode alerts (examples/policy.toml enforces the reuse rules) ask for actions.
    actions = d.collect(d.topics["actions"], lambda v: len(v) >= 1, timeout=30)
    record = orjson.loads(actions[0])
    assert list(record) == ["action", "session", "user", "alert_id", "ts"]
    assert record["alert_id"] in expected


def test_live_sessions_on_metrics_are_replays_census(
    deployment_factory: Factory, tmp_path: Path
) -> None:
    """Half a simulated day (sessions still open): the worker's census of live sessions,
    kept as its state is written, is what replay counts at the same point, once the last
    changes are written (the next checkpoint); and again after a restart with no local
    state and no new event, counted by the scan of what it recovered from the changelog
    (begun by the worker's timer, at the latest activity it read)."""
    from detector.engine import Engine
    from detector.fingerprint import Fingerprinter
    from detector.policy import Policy
    from detector.replay import Replayer

    day, _ = simulated_day(tmp_path, users=250)
    lines = day.read_bytes().splitlines()
    half = tmp_path / "half.jsonl"
    half.write_bytes(b"\n".join(lines[: len(lines) // 2]) + b"\n")
    engine = Engine(Policy.load(POLICY), Fingerprinter(KEY.encode()))
    Replayer(engine, lambda a: None, lambda d: None).feed(lines[: len(lines) // 2], "half")
    census = engine.census()
    expected = {"user": census.user_sessions, "guest": census.guest_sessions}
    assert expected["user"] > 20 and expected["guest"] > 0
    d = deployment_factory(8)
    d.produce(half)
    port = free_port()
    worker = d.start_worker(web_port=port)
    assert _census_reaches(port, expected) == expected, d.logs()
    # Restarted, it counts what it recovers from the changelog (the re-index's scan).
    os.killpg(worker.pid, signal.SIGTERM)
    worker.wait(60)
    shutil.rmtree(d.tmp / "data-w0")  # nothing local: all from the changelog
    port = free_port()
    d.start_worker(web_port=port)
    assert _census_reaches(port, expected) == expected, d.logs()
    # Every entry, read between events (there were none).
    values = samples(scrape(f"http://127.0.0.1:{port}/metrics"))
    assert values[("sessionwatch_state_entries", (("table", "state"),))] > SCAN_PER_EVENT
    assert total(values, "sessionwatch_events_total") == 0


def _census_reaches(port: int, expected: dict[str, int]) -> dict[str, int]:
    """The worker's live sessions by kind, once they are ``expected`` or after 60 s."""
    deadline = time.monotonic() + 60
    active: dict[str, int] = {}
    while active != expected and time.monotonic() < deadline:
        time.sleep(0.5)
        with contextlib.suppress(OSError):
            values = samples(scrape(f"http://127.0.0.1:{port}/metrics"))
            active = {
                dict(labels)["kind"]: int(v)
                for (name, labels), v in values.items()
                if name == "sessionwatch_active_sessions"
            }
    return active


def test_behaviour_alerts_in_streaming_equal_replay(
    deployment_factory: Factory, tmp_path: Path
) -> None:
    """The behaviour model on a simulated week: users' baselines live in the bundles of
    eight partitions, yet the worker finds exactly replay's alerts."""
    week, expected = simulated_day(tmp_path, users=25, seed=8, hours=120, behaviour_attacks=1)
    behaviour = {i for i, what in expected.detail.items() if what.startswith("behaviour")}
    assert len(behaviour) >= 2, expected.detail
    d = deployment_factory(8)
    d.produce(week)
    d.start_worker()
    got = d.collect(d.topics["alerts"], lambda v: len(alert_ids(v)) >= len(expected), 240)
    extra = {
        f"{a['kind']}@{a['event_id']}"
        for a in map(orjson.loads, got)
        if a["alert_id"] not in expected
    }
    missing = [expected.detail[i] for i in expected - alert_ids(got)]
    assert not extra and not missing, (extra, missing, d.logs())


def test_bad_input_goes_to_the_dlq_and_the_worker_stays_up(
    deployment_factory: Factory, tmp_path: Path
) -> None:
    d = deployment_factory(2)
    src = tmp_path / "mixed.jsonl"
    good_login = (
        b'{"event_id":"g1","ts":"2026-11-22T08:00:00Z","type":"login","session_id":'
        b'"9F3A1C7E5B2D48A6C0E1F7B3D95A2C4E","user":"alice","ip":"10.1.2.3"}'
    )
    good_reuse = (
        b'{"event_id":"g3","ts":"2026-11-22T08:30:00Z","type":"transaction","session_id":'
        b'"9F3A1C7E5B2D48A6C0E1F7B3D95A2C4E","user":"alice","ip":"10.1.2.3"}'
    )
    logout = (
        b'{"event_id":"g2","ts":"2026-11-22T08:10:00Z","type":"logout","session_id":'
        b'"9F3A1C7E5B2D48A6C0E1F7B3D95A2C4E","user":"alice"}'
    )
    bad = [
        b"not json at all",
        b'{"event_id":"b2","ts":"2026-11-22T08:00:00","type":"login"}',
        b'{"event_id":"b3","ts":1,"type":"explode","user":"x"}',
        b'{"event_id":"b4","ts":1,"type":"login","session_id":"S3CR3T-SESSION-ID","user":"u","ip":"999.1.1.1"}',
        b"[1,2,3]",
        # Dated in 2099 (a source's wrong clock): it used to expire every session.
        good_reuse.replace(b"g3", b"b6").replace(b"2026-11-22T08:30", b"2099-01-01T00:00"),
    ]
    src.write_bytes(b"\n".join([good_login, *bad, logout, good_reuse]) + b"\n")
    d.produce(src)
    asyncio.run(send_tombstone(d.bootstrap, d.topics["events"], b"u:alice"))
    worker = d.start_worker()
    dlq = d.collect(d.topics["dlq"], lambda v: len(v) >= len(bad) + 1)
    reasons = sorted(orjson.loads(v)["reason"].split(":")[0] for v in dlq)
    assert reasons == [
        "bad_ip", "bad_time", "bad_time", "not_json", "not_json", "not_object", "unknown_type"
    ]  # fmt: skip
    assert sum("ahead of this host's clock" in orjson.loads(v)["reason"] for v in dlq) == 1
    assert sum("has no value" in orjson.loads(v)["reason"] for v in dlq) == 1
    assert all(orjson.loads(v)["source"].startswith(d.topics["events"] + "/") for v in dlq)
    assert b"S3CR3T-SESSION-ID" not in b"".join(dlq)
    alerts = d.collect(d.topics["alerts"], lambda v: len(v) >= 1)
    assert [orjson.loads(a)["kind"] for a in alerts] == ["reuse_after_logout"]
    assert worker.poll() is None, d.logs()


def test_produce_dead_letters_lines_too_large_to_be_events(
    deployment_factory: Factory, tmp_path: Path
) -> None:
    """A line over the event size limit, here one over the broker's 1 MB message size
    too, used to stop ``produce`` with "the broker did not confirm" and leave the rest
    unsent. It goes to the dead-letter topic as replay writes it, and the rest is sent."""
    d = deployment_factory(2)
    sid = "9F3A1C7E5B2D48A6C0E1F7B3D95A2C4E"

    def event(eid: str, ts: str, kind: str, session: str, **extra: str) -> bytes:
        fields = {"event_id": eid, "ts": ts, "type": kind, "session_id": session, "user": "alice"}
        return orjson.dumps({**fields, "ip": "10.1.2.3", **extra})

    lines = [
        event("g1", "2026-11-22T08:00:00Z", "login", sid),
        event("big", "2026-11-22T08:01:00Z", "transaction", "S3CR3T-BIG", url="/" + "q" * 2**21),
        event("mid", "2026-11-22T08:02:00Z", "transaction", "S3CR3T-MID", url="/" + "q" * 10**5),
        event("g2", "2026-11-22T08:10:00Z", "logout", sid),
        event("g3", "2026-11-22T08:30:00Z", "transaction", sid),
    ]
    src = tmp_path / "large.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    out = d.cli("produce", "--config", str(POLICY), str(src))
    assert b"produced 3 events" in out.stderr
    assert f"2 line(s) over 65536 bytes, never an event, sent to {d.topics['dlq']}".encode() in (
        out.stderr
    )
    dlq = d.collect(d.topics["dlq"], lambda v: len(v) >= 2)
    replayed = tmp_path / "replay-dlq.jsonl"
    d.cli("replay", "-q", "--config", str(POLICY), "--dead-letter-out", str(replayed), str(src))
    letters = [orjson.loads(v) for v in dlq]
    assert letters == [orjson.loads(v) for v in replayed.read_bytes().splitlines()], (
        "the dead letters are replay's: the file, its line numbers, the reason"
    )
    assert [letter["offset"] for letter in letters] == [2, 3]
    assert b"S3CR3T" not in b"".join(dlq)
    worker = d.start_worker()
    alerts = d.collect(d.topics["alerts"], lambda v: len(v) >= 1)
    assert [orjson.loads(a)["kind"] for a in alerts] == ["reuse_after_logout"]
    assert worker.poll() is None, d.logs()


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is installed by `make test`")
@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_outside_client_kcat(deployment_factory: Factory, tmp_path: Path, compression: str) -> None:
    """Events produced with kcat (murmur2 partitioner, key = routing key), alerts read with
    kcat; compressed, the Kafka client decodes the worker's fetches instead of the
    extension (detector.stream.fetch)."""
    d = deployment_factory(4)
    lines = [
        (
            "u:bob",
            '{"event_id":"k1","ts":1795334400,"type":"login","session_id":"4B7E0C2A9D1F83E65A0B7C4D2E9F1A38","user":"bob","ip":"10.9.9.9"}',
        ),
        (
            "u:bob",
            '{"event_id":"k2","ts":1795334460,"type":"transaction","session_id":"4B7E0C2A9D1F83E65A0B7C4D2E9F1A38","user":"bob","ip":"185.220.101.4"}',
        ),
    ]
    payload = "".join(f"{k}\t{v}\n" for k, v in lines).encode()
    # kcat does not create topics; the worker does when it starts.
    d.start_worker()
    topic = d.topics["events"]
    for _ in range(60):
        meta = subprocess.run(["kcat", "-b", d.bootstrap, "-L", "-t", topic], capture_output=True)
        if b"4 partitions" in meta.stdout:
            break
        subprocess.run(["sleep", "1"], check=True)
    subprocess.run(
        [
            "kcat",
            "-b",
            d.bootstrap,
            "-P",
            "-t",
            topic,
            "-K",
            "\t",
            "-X",
            "partitioner=murmur2_random",
            "-z",
            compression,
        ],
        input=payload,
        check=True,
    )
    d.collect(d.topics["alerts"], lambda v: len(v) >= 1)
    out = subprocess.run(
        ["kcat", "-b", d.bootstrap, "-C", "-t", d.topics["alerts"], "-e", "-q", "-f", "%k\t%s\n"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    key, value = out.strip().split("\t", 1)
    alert = orjson.loads(value)
    assert alert["kind"] == "ip_change" and alert["event_id"] == "k2" and key == alert["session"]


def assert_same_alerts(got: list[bytes], expected: Expected, d: Deployment) -> None:
    extra = [
        (a["kind"], a["event_id"]) for a in map(orjson.loads, got) if a["alert_id"] not in expected
    ]
    missing = sorted(expected.detail[i] for i in expected - alert_ids(got))
    assert not extra and not missing, f"extra={extra} missing={missing}\n{d.logs()[-2000:]}"


def _produce_in_background(d: Deployment, day: Path, rate: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "detector.cli",
            "produce",
            "--config",
            "examples/policy.toml",
            "--rate",
            str(rate),
            str(day),
        ],
        env=d.env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_kill_9_mid_stream_loses_no_alert(deployment_factory: Factory, tmp_path: Path) -> None:
    day, expected = simulated_day(tmp_path)
    d = deployment_factory(4)
    producer = _produce_in_background(d, day, rate=600)
    worker = d.start_worker("first")
    d.collect(d.topics["alerts"], lambda v: len(v) >= 6)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(10)
    # A fresh data directory: every bit of state must come back from the changelog.
    d.start_worker("second")
    got = d.collect(d.topics["alerts"], lambda v: alert_ids(v) >= expected, timeout=180)
    producer.wait(120)
    assert_same_alerts(got, expected, d)
    duplicates = len(got) - len(alert_ids(got))
    print(f"duplicates after kill -9: {duplicates} (same alert_id)")


def _session_story(path: Path, sid: str, user: str, first: str, t: float, reuse: bool) -> None:
    """A login and logout of ``sid``; with ``reuse``, a request on it 400 s later (past
    examples/policy.toml's 2-minute logout grace: ``reuse_after_logout``)."""
    events: list[dict[str, object]] = [
        {"event_id": f"{first}1", "ts": t, "type": "login", "session_id": sid, "user": user,
         "ip": "10.9.9.9"},
        {"event_id": f"{first}2", "ts": t + 1, "type": "logout", "session_id": sid,
         "user": user, "ip": "10.9.9.9"},
    ]  # fmt: skip
    if reuse:
        events.append(
            {"event_id": f"{first}3", "ts": t + 400, "type": "transaction", "session_id": sid,
             "user": user, "ip": "10.9.9.9", "url": "/x"}
        )  # fmt: skip
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))


def _wait_for_events(port: int, events: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if total(samples(scrape(f"http://127.0.0.1:{port}/metrics")),
                     "sessionwatch_events_total") >= events:  # fmt: skip
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"fewer than {events} events processed in 60 s")


def test_kill_9_before_a_checkpoint_reads_the_unwritten_events_again(
    deployment_factory: Factory, tmp_path: Path
) -> None:
    """State is written at checkpoints, and an event's offset is committed only after
    the checkpoint that wrote its effects. Killed with the state of a login and logout
    unwritten (and Faust's commit timer having run meanwhile), the worker must read them
    again, or a later reuse of the session is not seen as one."""
    d = deployment_factory(2)
    d.env["SESSIONWATCH_CHECKPOINT_SECONDS"] = "300"
    sid, t = "4E7D2A91C3B85F06D1E9A7C4B2F83D5A", 1_764_900_000
    _session_story(tmp_path / "before.jsonl", sid, "kim", "k", t, reuse=False)
    d.produce(tmp_path / "before.jsonl")
    port = free_port()
    first = d.start_worker("first", web_port=port)
    _wait_for_events(port, 2)
    time.sleep(6)  # two of Faust's commit intervals (2.8 s)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    (tmp_path / "after.jsonl").write_bytes(
        orjson.dumps({"event_id": "k3", "ts": t + 400, "type": "transaction",
                      "session_id": sid, "user": "kim", "ip": "10.9.9.9", "url": "/x"})
        + b"\n"
    )  # fmt: skip
    d.produce(tmp_path / "after.jsonl")
    d.start_worker("second")  # a fresh data directory: state from the changelog only
    got = d.collect(d.topics["alerts"], lambda v: len(v) >= 1, timeout=90)
    alerts = [orjson.loads(a) for a in got]
    assert {(a["kind"], a["event_id"]) for a in alerts} == {("reuse_after_logout", "k3")}, d.logs()
    # Sometimes the alert comes twice (on a04db36 as well: 1 run in 3 on a fresh broker),
    # most likely from a rebalance of the second worker re-delivering what it had not
    # checkpointed (300 s here). The issue allows a duplicate after a crash if it carries
    # the same alert_id, which a consumer de-duplicates on.
    assert len({a["alert_id"] for a in alerts}) == 1, alerts


def test_records_behind_is_what_a_catching_up_worker_has_yet_to_apply(
    deployment_factory: Factory, tmp_path: Path
) -> None:
    """``sessionwatch_records_behind`` counts, per partition, records up to the end offset
    the worker has not applied: catching up on a filled topic, records applied plus
    records behind make the whole topic once every partition's end is known, and the
    gauge is 0 once all are applied (commits, which follow checkpoints, come later)."""
    d = deployment_factory(4)
    buf = io.BytesIO()
    Simulation(users=1000, hours=24, seed=42).write(buf)
    path = tmp_path / "day.jsonl"
    path.write_bytes(buf.getvalue())
    n = buf.getvalue().count(b"\n")
    d.produce(path)
    port = free_port()
    d.start_worker("w", web_port=port)
    seen: list[tuple[float, float, int]] = []  # applied, behind, partitions reported
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            values = samples(scrape(f"http://127.0.0.1:{port}/metrics"))
        except OSError:
            time.sleep(0.1)
            continue
        applied = total(values, "sessionwatch_events_total") + total(
            values, "sessionwatch_invalid_events_total"
        )
        behind = [v for (name, _), v in values.items() if name == "sessionwatch_records_behind"]
        seen.append((applied, sum(behind), len(behind)))
        if applied >= n and behind == [0.0] * 4:
            break
        time.sleep(0.1)
    assert seen and seen[-1] == (n, 0.0, 4), (n, seen[-5:], d.logs())
    assert all(applied + behind <= n for applied, behind, _ in seen), seen
    midway = [(a, b) for a, b, parts in seen if 0 < a < n and parts == 4 and a + b == n]
    assert midway, (n, seen)


def test_a_clean_stop_writes_its_state_and_a_restart_sends_no_alert_twice(
    deployment_factory: Factory, tmp_path: Path
) -> None:
    """A stop (SIGTERM) between checkpoints writes what changed and commits it, so the
    next worker does not process those events, and send their alerts, a second time."""
    d = deployment_factory(2)
    d.env["SESSIONWATCH_CHECKPOINT_SECONDS"] = "300"
    t = 1_764_900_000
    _session_story(
        tmp_path / "a.jsonl", "7C1B9E4F2A6D83C05E9B1F7A3D4C2E86", "amy", "a", t, reuse=True
    )
    d.produce(tmp_path / "a.jsonl")
    first = d.start_worker("first")
    d.collect(d.topics["alerts"], lambda v: len(v) >= 1, timeout=90)
    os.killpg(first.pid, signal.SIGTERM)
    assert first.wait(60) == 0, d.logs()
    _session_story(
        tmp_path / "b.jsonl", "D83F5A2C9E1B47D6A0C3E8F1B5D92A47", "bob", "b", t + 10, reuse=True
    )
    d.produce(tmp_path / "b.jsonl")
    d.start_worker("second")

    def both(values: list[bytes]) -> bool:
        return {orjson.loads(v)["event_id"] for v in values} >= {"a3", "b3"}

    got = d.collect(d.topics["alerts"], both, timeout=90)
    time.sleep(3)  # a re-sent alert of amy's would come with bob's or right after
    got = d.collect(d.topics["alerts"], lambda v: len(v) >= len(got), timeout=30)
    assert sorted(orjson.loads(v)["event_id"] for v in got) == ["a3", "b3"], d.logs()


def test_offsets_without_records_are_read_back_and_skipped(
    deployment_factory: Factory, tmp_path: Path
) -> None:
    """A transactional producer leaves offsets with no record (commit markers): each one
    is a hole in the worker's delivery, filled by reading Kafka back (finding nothing),
    and the alerts stay exactly replay's."""
    day, expected = simulated_day(tmp_path, users=20, hours=8)
    d = deployment_factory(2)
    fingerprint = Fingerprinter(KEY.encode())
    lines = day.read_bytes().splitlines()
    keys = [routing_key(ev, fingerprint).encode() for ev in map(decode, lines)]  # type: ignore[arg-type]
    asyncio.run(
        produce_in_transactions(d.bootstrap, d.topics["events"], d.partitions, lines, keys, 50)
    )
    web = free_port()
    d.start_worker(web_port=web)
    got = d.collect(d.topics["alerts"], lambda v: alert_ids(v) >= expected, timeout=120)
    assert_same_alerts(got, expected, d)
    events = len(lines)
    deadline = time.monotonic() + 60
    while True:
        values = samples(scrape(f"http://127.0.0.1:{web}/metrics"))
        if total(values, "sessionwatch_events_total") >= events or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert total(values, "sessionwatch_events_total") == events
    # A commit marker per partition per transaction: each one followed by an event is a
    # hole, with nothing to read back.
    assert total(values, "sessionwatch_delivery_holes_total") >= 2, values
    assert total(values, "sessionwatch_records_read_back_total") == 0


@pytest.mark.parametrize("store", ["rocksdb://", "memory://"])
def test_two_workers_scale_out_and_fail_over(
    deployment_factory: Factory, tmp_path: Path, store: str
) -> None:
    day, expected = simulated_day(tmp_path)
    d = deployment_factory(8, store)
    producer = _produce_in_background(d, day, rate=600)
    d.start_worker("a")
    b = d.start_worker("b")
    d.collect(d.topics["alerts"], lambda v: len(v) >= 6)
    os.killpg(b.pid, signal.SIGTERM)  # a clean stop: its partitions move to "a"
    b.wait(60)
    got = d.collect(d.topics["alerts"], lambda v: alert_ids(v) >= expected, timeout=180)
    producer.wait(120)
    assert_same_alerts(got, expected, d)


def _partitions_held(port: int) -> set[int]:
    """The partitions of the events topic a worker reports records behind for (those
    assigned to it, once their end is known); none while its web server does not answer."""
    try:
        values = samples(scrape(f"http://127.0.0.1:{port}/metrics"))
    except OSError:
        return set()
    return {
        int(dict(labels)["partition"])
        for (name, labels), _ in values.items()
        if name == "sessionwatch_records_behind"
    }


def _gauges(port: int) -> tuple[float, float]:
    """A worker's sessionwatch_partitions_assigned and sessionwatch_input_partitions."""
    values = samples(scrape(f"http://127.0.0.1:{port}/metrics"))
    return (
        values[("sessionwatch_partitions_assigned", ())],
        values[("sessionwatch_input_partitions", ())],
    )


def _wait_held(ports: list[int], want: int, timeout: float, d: Deployment) -> float:
    """Seconds until the workers on ``ports`` each hold partitions and ``want`` together."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        held = [_partitions_held(p) for p in ports]
        if all(held) and len(set().union(*held)) == want and sum(map(len, held)) == want:
            return time.monotonic() - start
        time.sleep(0.2)
    raise AssertionError(f"partitions {held} after {timeout} s\n{d.logs()}")


def test_a_killed_worker_s_partitions_move_within_the_failover_window(
    deployment_factory: Factory, tmp_path: Path
) -> None:
    """kill -9 leaves no goodbye to the group: its partitions wait for the group's session
    timeout (``SESSIONWATCH_FAILOVER_SECONDS``; Faust's own is 60 s). With 6 s the other
    worker holds all of them well within 30 s, and no alert is lost."""
    day, expected = simulated_day(tmp_path)
    d = deployment_factory(8)
    d.env["SESSIONWATCH_FAILOVER_SECONDS"] = "6"
    producer = _produce_in_background(d, day, rate=600)
    port_a, port_b = free_port(), free_port()
    d.start_worker("a", web_port=port_a)
    b = d.start_worker("b", web_port=port_b)
    _wait_held([port_a, port_b], 8, 120, d)
    assert [_gauges(p) for p in (port_a, port_b)] == [(4, 8), (4, 8)]
    os.killpg(b.pid, signal.SIGKILL)
    b.wait(10)
    moved = _wait_held([port_a], 8, 60, d)
    print(f"partitions moved {moved:.1f} s after kill -9 (failover 6 s)")
    assert moved < 30, d.logs()
    assert _gauges(port_a) == (8, 8)  # what alert SessionwatchPartitionsUnwatched reads
    got = d.collect(d.topics["alerts"], lambda v: alert_ids(v) >= expected, timeout=180)
    producer.wait(120)
    assert_same_alerts(got, expected, d)


def test_session_review_api(deployment_factory: Factory, tmp_path: Path) -> None:
    """List a user's live sessions by fingerprint, terminate one, see its reuse flagged."""
    d = deployment_factory(2)
    d.env["SESSIONWATCH_API_TOKEN"] = "s3cret-token"
    # Nothing is written to the table within the test: the API must read unwritten state.
    d.env["SESSIONWATCH_CHECKPOINT_SECONDS"] = "300"
    sid = "9F3A1C7E5B2D48A6C0E1F7B3D95A2C4E"
    first = tmp_path / "first.jsonl"
    first.write_bytes(
        b'{"event_id":"a1","ts":"2026-11-22T08:00:00Z","type":"login","session_id":"'
        + sid.encode()
        + b'","user":"alice","ip":"10.1.2.3","node":"node-a"}\n'
    )
    d.produce(first)
    port = free_port()
    d.start_worker(web_port=port)
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": "Bearer s3cret-token"}

    def call(method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
        req = urllib.request.Request(base + path, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    listing: dict[str, object] = {}
    for _ in range(60):
        try:
            status, listing = call("GET", "/sessions?user=alice", auth)
            if status == 200 and listing["sessions"]:
                break
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(1)
    sessions = listing["sessions"]
    assert isinstance(sessions, list) and len(sessions) == 1
    fp = sessions[0]["session"]
    assert sid not in json.dumps(listing) and sessions[0]["login_ip"] == "10.1.2.3"
    assert call("GET", "/sessions?user=alice", {})[0] == 401
    assert call("GET", "/sessions?user=alice", {"Authorization": "Bearer nope"})[0] == 401
    status, body = call("POST", f"/sessions/{fp}/terminate?user=alice&actor=soc", auth)
    assert status == 202, body
    # Confirmed by Kafka: where the event is.
    assert body["partition"] in (0, 1) and isinstance(body["offset"], int), body
    for _ in range(30):
        if not call("GET", "/sessions?user=alice", auth)[1]["sessions"]:
            break
        time.sleep(1)
    else:
        raise AssertionError("terminated session still listed")
    later = tmp_path / "later.jsonl"
    later.write_bytes(
        b'{"event_id":"a2","ts":' + str(time.time() + 60).encode() + b',"type":"transaction",'
        b'"session_id":"' + sid.encode() + b'","user":"alice","ip":"10.1.2.3"}\n'
    )
    d.produce(later)
    alerts = d.collect(d.topics["alerts"], lambda v: len(v) >= 1, timeout=60)
    assert [json.loads(a)["kind"] for a in alerts] == ["reuse_after_termination"]


def test_session_api_answers_for_every_worker(deployment_factory: Factory, tmp_path: Path) -> None:
    """Two workers split the partitions; either answers for any user (forwarding)."""
    d = deployment_factory(8)
    token = "s3cret-token"
    d.env["SESSIONWATCH_API_TOKEN"] = token
    users = [f"user{i:02d}" for i in range(12)]
    now = time.time() - 60
    logins = tmp_path / "logins.jsonl"
    logins.write_bytes(
        b"".join(
            orjson.dumps(
                {
                    "event_id": f"l{i}",
                    "ts": now + i,
                    "type": "login",
                    "session_id": f"{i:02d}" + "9F3A1C7E5B2D48A6C0E1F7B3D95A2C",
                    "user": user,
                    "ip": "10.1.2.3",
                }
            )
            + b"\n"
            for i, user in enumerate(users)
        )
    )
    d.produce(logins)
    ports = [free_port(), free_port()]
    d.start_worker("a", web_port=ports[0])
    d.start_worker("b", web_port=ports[1])
    answers: dict[tuple[int, str], dict[str, Any]] = {}
    for _ in range(120):
        answers = {}
        for port in ports:
            for user in users:
                status, body = call_api(f"http://127.0.0.1:{port}/sessions?user={user}", token)
                if status == 200 and len(body["sessions"]) == 1:
                    answers[(port, user)] = body
        if len(answers) == 2 * len(users):
            break
        time.sleep(1)
    assert len(answers) == 2 * len(users), (sorted(answers), d.logs())
    for user in users:
        a, b = answers[(ports[0], user)], answers[(ports[1], user)]
        assert a["sessions"] == b["sessions"] and a["served_by"] == b["served_by"]
    served = {body["served_by"] for body in answers.values()}
    assert served == {f"http://127.0.0.1:{p}" for p in ports}, served


def _records(bootstrap: str, topic: str, n: int) -> list[Any]:
    """The first ``n`` records of ``topic`` (all partitions), with their timestamps."""
    from aiokafka import AIOKafkaConsumer

    async def read() -> list[Any]:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        got: list[Any] = []
        try:
            deadline = time.monotonic() + 60
            while len(got) < n and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got.extend(records)
        finally:
            await consumer.stop()
        return got

    return asyncio.run(read())


def test_produce_paces_by_recorded_time_or_rate(
    deployment_factory: Factory, tmp_path: Path
) -> None:
    """``--speed`` keeps recorded gaps scaled, ``--rate`` a fixed pace. Checked on the
    broker's record timestamps (set when the producer sends), as lower bounds only (a
    sleep never ends early, so a slow machine cannot fail it), less 10 ms: the pace is
    anchored when sending starts, a little before the first record's timestamp. Unpaced,
    the gaps would be a few ms."""
    recorded = [0.0, 0.0, 3.0, 6.0, 6.0, 10.0]  # seconds after the first event
    path = tmp_path / "paced.jsonl"
    path.write_bytes(
        b"".join(
            orjson.dumps(
                {
                    "event_id": f"e{i}",
                    "ts": 1_700_000_000 + t,
                    "type": "transaction",
                    "session_id": "A" * 32,  # one key: one partition, send order kept
                    "user": "pace",
                    "ip": "10.0.0.1",
                }
            )
            + b"\n"
            for i, t in enumerate(recorded)
        )
    )
    d = deployment_factory(1)
    d.produce(path, "--speed", "20")
    by_id = {
        orjson.loads(r.value)["event_id"]: r.timestamp
        for r in _records(d.bootstrap, d.topics["events"], 6)
    }
    sent_ms = [by_id[f"e{i}"] for i in range(len(recorded))]
    assert sent_ms == sorted(sent_ms)
    for i in range(1, len(recorded)):
        assert sent_ms[i] - sent_ms[0] >= (recorded[i] - recorded[0]) * 1000 / 20 - 10

    # An event dated in 2099 (which the worker refuses) goes at once and paces nothing:
    # it used to hold the rest back for 73 years / 20.
    lines = path.read_bytes().splitlines()
    ahead = lines[2].replace(b'"e2"', b'"ahead"').replace(b"1700000003.0", b"4070908800.0")
    assert ahead != lines[2]
    path.write_bytes(b"\n".join([*lines[:3], ahead, *lines[3:]]) + b"\n")
    d3 = deployment_factory(1)
    d3.cli("produce", "--config", str(POLICY), "--speed", "20", str(path), timeout=60)
    got = {
        orjson.loads(r.value)["event_id"] for r in _records(d3.bootstrap, d3.topics["events"], 7)
    }
    assert got == {f"e{i}" for i in range(len(recorded))} | {"ahead"}

    d2 = deployment_factory(1)
    d2.produce(path, "--rate", "10")  # one event every 100 ms
    stamps = sorted(r.timestamp for r in _records(d2.bootstrap, d2.topics["events"], 7))
    assert stamps[-1] - stamps[0] >= len(recorded) * 100 - 10


def test_produce_sends_a_cut_gzip_up_to_the_cut_and_exits_1(
    deployment_factory: Factory, tmp_path: Path
) -> None:
    """Every complete line before the cut reaches session-events, in order; the command
    then says what it could not read, with exit code 1 (not a traceback, and not silence
    about the lost tail)."""
    lines = [
        orjson.dumps(
            {
                "event_id": f"e{i}",
                "ts": 1_700_000_000 + i,
                "type": "transaction",
                "session_id": "B" * 32,
                "user": "cut",  # one key: one partition, order kept
                "ip": "10.0.0.1",
                "pad": os.urandom(60).hex(),  # incompressible: the cut falls mid-file
            }
        )
        + b"\n"
        for i in range(400)
    ]
    packed = gzip.compress(b"".join(lines))
    cut = packed[: len(packed) // 2]
    head = zlib.decompressobj(wbits=31).decompress(cut)
    complete = head.count(b"\n")
    assert 0 < complete < len(lines)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(cut)
    d = deployment_factory(1)
    with pytest.raises(subprocess.CalledProcessError) as info:
        d.produce(path)
    assert info.value.returncode == 1
    err = info.value.stderr.decode()
    assert f"produced {complete} events" in err and "Compressed file ended" in err
    assert "Traceback" not in err
    sent = [
        orjson.loads(r.value)["event_id"]
        for r in _records(d.bootstrap, d.topics["events"], complete)
    ]
    assert sent == [f"e{i}" for i in range(complete)]


def test_alerts_on_a_missing_topic_says_so_and_follow_waits_for_it(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Without --follow: exit 1 naming the topic and the setting (it used to wait for
    ever, aiokafka logging an error ten times a second). With --follow: it waits quietly
    and prints what arrives once a worker (here, an admin client) creates the topic."""
    from aiokafka import AIOKafkaProducer

    topic = f"alerts-missing-{os.getpid()}-{time.monotonic_ns()}"
    env = {
        **os.environ,
        "SESSIONWATCH_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "SESSIONWATCH_TOPIC_ALERTS": topic,
        "SESSIONWATCH_KEY": "k",
    }
    cli = [sys.executable, "-m", "detector.cli", "alerts"]
    once = subprocess.run(cli, env=env, cwd=ROOT, capture_output=True, timeout=60)
    assert once.returncode == 1
    assert f"no topic {topic!r}" in once.stderr.decode()
    assert "SESSIONWATCH_TOPIC_ALERTS" in once.stderr.decode()

    log = tmp_path / "follow.err"
    with open(log, "wb") as err:
        follower = subprocess.Popen(
            [*cli, "--follow"], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=err
        )
    try:
        time.sleep(3)  # it is waiting for the topic now
        assert follower.poll() is None

        async def create_and_send() -> None:
            await create_topic(kafka_bootstrap, topic, 2)
            producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
            await producer.start()
            try:
                await producer.send_and_wait(topic, b'{"alert_id":"late"}', partition=1)
            finally:
                await producer.stop()

        asyncio.run(create_and_send())
        assert follower.stdout is not None
        ready = select.select([follower.stdout], [], [], 60)[0]
        assert ready, log.read_text()
        assert follower.stdout.readline() == b'{"alert_id":"late"}\n'
    finally:
        follower.kill()
        follower.wait(10)
    assert log.read_text().count("not found in cluster metadata") < 3


def test_a_worker_whose_partition_count_differs_from_existing_topics_is_refused(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Run against an 8-partition input with 4 configured, the worker used to start,
    and Faust raised PartitionsMismatch on every table write of partitions 4-7 while the
    worker limped on. Now it stops at start-up (exit 2) saying what to set; a changelog
    left by an earlier count is refused too, with what to do about it."""
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    env = {
        **os.environ,
        "SESSIONWATCH_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "SESSIONWATCH_KEY": "k",
        "SESSIONWATCH_APP_ID": f"mismatch-{tag}",
        "SESSIONWATCH_TOPIC_EVENTS": f"events-{tag}",
        "SESSIONWATCH_TOPIC_ALERTS": f"alerts-{tag}",
        "SESSIONWATCH_TOPIC_ACTIONS": f"actions-{tag}",
        "SESSIONWATCH_TOPIC_DLQ": f"dlq-{tag}",
    }

    def worker(partitions: int) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "detector.cli", "worker", "-q"],
            env={**env, "SESSIONWATCH_PARTITIONS": str(partitions)},
            cwd=ROOT,
            capture_output=True,
            timeout=120,
        )

    asyncio.run(create_topic(kafka_bootstrap, f"events-{tag}", 8))
    refused = worker(4)
    assert refused.returncode == 2
    err = refused.stderr.decode()
    assert f"configured for 4 partitions but 'events-{tag}' has 8" in err
    assert "set SESSIONWATCH_PARTITIONS" in err

    asyncio.run(create_topic(kafka_bootstrap, f"mismatch-{tag}-state-changelog", 2))
    refused = worker(8)
    assert refused.returncode == 2
    err = refused.stderr.decode()
    assert f"changelog 'mismatch-{tag}-state-changelog' has 2 partitions, the input 8" in err
    assert "new SESSIONWATCH_APP_ID" in err


def test_a_worker_stops_when_its_input_gains_partitions_while_it_runs(
    deployment_factory: Factory, tmp_path: Path
) -> None:
    """Partitions added to the input topic under a running worker: its state changelog
    keeps the old count, and keys moved to the new partitions meet none of their state.
    The worker used to detect on without it (3 false alerts in 34 here, one missed) until
    its first state write there stopped it with Faust's "Unrecognized partition". Now it
    stops at the assignment that hands it a new partition (exit 2, saying what to do),
    before a second day's events reach it: no alert but replay's of the first day."""
    d = deployment_factory(2)
    day, expected = simulated_day(tmp_path, users=10, hours=4)
    d.produce(day)
    worker = d.start_worker("w")
    assert_same_alerts(
        d.collect(d.topics["alerts"], lambda v: alert_ids(v) >= expected), expected, d
    )
    asyncio.run(_add_partitions(d.bootstrap, d.topics["events"], 4))
    (tmp_path / "two").mkdir()
    second, _ = simulated_day(tmp_path / "two", users=10, hours=4, seed=6)
    d.produce(second)
    assert worker.wait(60) == 2, d.logs()
    says = d.logs()
    assert f"the input topic {d.topics['events']!r} has gained partitions" in says, says
    assert "the worker and its state changelog have 2" in says
    assert "new SESSIONWATCH_APP_ID" in says
    assert "Traceback" not in says
    # Day one's alerts, and none of an event in a new partition (the second day's events
    # of the old ones, whose keys stayed there with their state, may have been read).
    events = len(day.read_bytes().splitlines()) + len(second.read_bytes().splitlines())
    partition = {
        orjson.loads(r.value)["event_id"]: r.partition
        for r in _records(d.bootstrap, d.topics["events"], events)
    }
    assert len(partition) == events
    alerts = [orjson.loads(v) for v in d.collect(d.topics["alerts"], lambda v: False, 5)]
    assert {a["alert_id"] for a in alerts} >= expected
    assert {partition[a["event_id"]] for a in alerts} <= {0, 1}
    assert any(p >= 2 for p in partition.values())  # the new partitions had events


def test_every_worker_stops_when_the_input_grows_by_other_than_a_multiple(
    deployment_factory: Factory, tmp_path: Path
) -> None:
    """From 2 partitions to 3 keys move between the old partitions too, so a worker that
    is handed no new partition must stop as well: it reads the topic's count at the
    rebalance the growth brings (before, it went on detecting without the moved keys'
    state)."""
    d = deployment_factory(2)
    day, expected = simulated_day(tmp_path, users=10, hours=4)
    d.produce(day)
    workers = [d.start_worker("a"), d.start_worker("b")]
    assert_same_alerts(
        d.collect(d.topics["alerts"], lambda v: alert_ids(v) >= expected), expected, d
    )
    asyncio.run(_add_partitions(d.bootstrap, d.topics["events"], 3))
    assert [w.wait(60) for w in workers] == [2, 2], d.logs()
    says = d.logs()
    assert says.count("has gained partitions while the worker ran") == 2, says
    assert "(it has 3; the worker and its state changelog have 2)" in says, says
    assert "Traceback" not in says


async def _add_partitions(bootstrap: str, topic: str, total: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_partitions({topic: NewPartitions(total_count=total)})
    finally:
        await admin.close()


def test_a_user_with_thousands_of_sessions_does_not_stop_the_worker(
    deployment_factory: Factory, tmp_path: Path
) -> None:
    """3,000 logins of one account (an integration logging in per request) made its state
    record larger than Kafka accepts, and Faust's producer took the worker down. Now the
    record is cut to fit (sessions_shed counts what was forgotten) and detection goes on:
    a reuse after logout by another user, sent after the burst, is still flagged."""
    burst = b"".join(
        orjson.dumps(
            {
                "event_id": f"svc{i}",
                "ts": 1_764_900_000 + i * 0.1,
                "type": "login",
                "session_id": f"{i:032x}",
                "user": "svc-integration",
                "ip": f"10.0.{i % 200}.{i % 250 + 1}",
                "user_agent": "python-requests/2.31 " + "x" * 200,
            }
        )
        + b"\n"
        for i in range(3000)
    )
    t = 1_764_900_400
    probe = b"".join(
        orjson.dumps(e) + b"\n"
        for e in (
            {
                "event_id": "p1",
                "ts": t,
                "type": "login",
                "session_id": "P" * 32,
                "user": "ann",
                "ip": "10.9.9.9",
            },
            {
                "event_id": "p2",
                "ts": t + 1,
                "type": "logout",
                "session_id": "P" * 32,
                "user": "ann",
                "ip": "10.9.9.9",
            },
            {
                "event_id": "p3",
                "ts": t + 400,  # past the logout grace of examples/policy.toml (2 min)
                "type": "transaction",
                "session_id": "P" * 32,
                "user": "ann",
                "ip": "10.9.9.9",
                "url": "/x",
            },
        )
    )
    (tmp_path / "burst.jsonl").write_bytes(burst)
    (tmp_path / "probe.jsonl").write_bytes(probe)
    d = deployment_factory(1)
    port = free_port()
    worker = d.start_worker(web_port=port)
    d.produce(tmp_path / "burst.jsonl")
    d.produce(tmp_path / "probe.jsonl")

    def reuse_flagged(values: list[bytes]) -> bool:
        return any(
            a["kind"] == "reuse_after_logout" and a["event_id"] == "p3"
            for a in map(orjson.loads, values)
        )

    alerts = d.collect(d.topics["alerts"], reuse_flagged, timeout=120)
    assert reuse_flagged(alerts), d.logs()
    assert worker.poll() is None, d.logs()
    # State is written (and cut) at the next checkpoint, seconds after the alerts.
    deadline = time.monotonic() + 30
    while True:
        shed = total(
            samples(scrape(f"http://127.0.0.1:{port}/metrics")), "sessionwatch_sessions_shed_total"
        )
        if shed > 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert shed > 0
