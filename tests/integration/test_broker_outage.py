"""A broker that goes away and comes back (a restart, a network cut) while a worker runs.

Each test halts a broker of its own (the shared one serves the other tests) and starts
it again on the same ports and storage, as a rolling restart of a one-node cluster does;
the last shuts a door on the worker's way to the shared one instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from detector.cli import STOP_WITHIN_S
from tests.integration.streaming import (
    ROOT,
    Deployment,
    alert_ids,
    call_api,
    free_port,
    simulated_day,
)
from tests.integration.test_streaming import assert_same_alerts

pytestmark = pytest.mark.kafka


@pytest.fixture
def own_broker() -> Iterator[Any]:
    sys.path.insert(0, str(ROOT / "deploy" / "kafka"))
    from broker import Broker

    broker = Broker().start()
    try:
        yield broker
    finally:
        broker.stop()


def _await_line(d: Deployment, worker: subprocess.Popen[bytes], line: bytes) -> None:
    """Waits (up to a minute) until the worker's log ``w.log`` holds ``line``."""
    deadline = time.monotonic() + 60
    while line not in (d.tmp / "w.log").read_bytes():
        assert time.monotonic() < deadline and worker.poll() is None, d.logs()
        time.sleep(0.05)


def _produce(d: Deployment, day: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "detector.cli", "produce", "--config",
         "examples/policy.toml", *extra, str(day)],
        env=d.env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip


def test_a_broker_outage_mid_stream_loses_nothing_and_floods_no_log(
    own_broker: Any, tmp_path: Path
) -> None:
    """The broker is down for 12 s while events are sent and processed: the worker stays
    up and catches up, ``produce`` holds its events until the broker is back, and the
    alerts are exactly replay's, also as ``alerts --follow`` prints them. The worker's log
    says what went wrong once per kind of complaint, not ~75 times a second."""
    day, expected = simulated_day(tmp_path)
    lines = day.read_bytes().splitlines()
    d = Deployment(own_broker.bootstrap, 4, tmp_path / "d")
    d.tmp.mkdir()
    reader: subprocess.Popen[bytes] | None = None
    try:
        worker = d.start_worker("w")
        producer = _produce(d, day, "--rate", "120")  # ~33 s: the outage comes mid-way
        reader = subprocess.Popen(
            [sys.executable, "-m", "detector.cli", "alerts", "--follow"],
            env=d.env,
            cwd=ROOT,
            stdout=open(tmp_path / "followed.jsonl", "wb"),  # noqa: SIM115 - closed with it
            stderr=subprocess.DEVNULL,
        )
        d.collect(d.topics["alerts"], lambda v: len(v) >= 1)
        assert producer.poll() is None, "the outage must come while events are being sent"
        own_broker.halt()
        time.sleep(12)
        own_broker.start()
        _, err = producer.communicate(timeout=240)
        assert producer.returncode == 0, err.decode()
        got = d.collect(d.topics["alerts"], lambda v: alert_ids(v) >= expected, timeout=180)
        assert worker.poll() is None, d.logs()
        assert_same_alerts(got, expected, d)
        events = d.collect(d.topics["events"], lambda v: len(v) >= len(lines), timeout=30)
        assert sorted(events) == sorted(lines)  # each once: none lost, none sent twice
        complaints = [
            line
            for line in (d.tmp / "w.log").read_text(errors="replace").splitlines()
            if "[ERROR]" in line or "[WARNING]" in line
        ]
        assert 0 < len(complaints) <= 25, "\n".join(complaints[:50])
        # `alerts --follow` rode it out too.
        deadline = time.monotonic() + 30
        while alert_ids((tmp_path / "followed.jsonl").read_bytes().splitlines()) < expected:
            assert time.monotonic() < deadline and reader.poll() is None
            time.sleep(0.5)
    finally:
        if reader is not None:
            reader.terminate()
            reader.wait(10)
        d.stop()


def test_a_worker_whose_broker_goes_away_as_it_subscribes_takes_its_partitions_when_back(
    own_broker: Any, tmp_path: Path
) -> None:
    """The broker goes away just before the worker subscribes (Faust's conductor waits a
    second for the tables first) and is back 10 s later: the worker, still up, joins its
    group and gives replay's alerts. It used to join with the view of the cluster it
    could not fetch, take no partition (every topic "missing") and hold none for the 5
    minutes until that view was due again."""
    day, expected = simulated_day(tmp_path, users=10, hours=4)
    d = Deployment(own_broker.bootstrap, 2, tmp_path / "d")
    d.tmp.mkdir()
    d.produce(day)
    try:
        worker = d.start_worker("w", quiet=False)
        _await_line(d, worker, b"Waiting for tables to be registered")
        own_broker.halt()
        time.sleep(10)
        own_broker.start()
        got = d.collect(d.topics["alerts"], lambda v: alert_ids(v) >= expected, timeout=90)
        assert worker.poll() is None, d.logs()
        assert_same_alerts(got, expected, d)
    finally:
        d.stop()


def test_produce_says_which_events_the_broker_did_not_confirm(
    own_broker: Any, tmp_path: Path
) -> None:
    """Past ``--delivery-timeout`` with the broker gone, ``produce`` stops sending and
    exits 1 naming the first unconfirmed line and the counts, where it used to report
    every event produced while the client dropped the batches it could not deliver."""
    day, _ = simulated_day(tmp_path, users=40)
    n = len(day.read_bytes().splitlines())
    d = Deployment(own_broker.bootstrap, 2, tmp_path / "d")
    d.tmp.mkdir()
    producer = _produce(d, day, "--rate", "200", "--delivery-timeout", "3")
    d.collect(d.topics["events"], lambda v: len(v) >= 100, timeout=60)
    own_broker.halt()
    _, err = producer.communicate(timeout=120)
    text = err.decode()
    own_broker.start()
    assert producer.returncode == 1, text
    said = re.search(
        r"sessionwatch: the broker did not confirm (\d+) event\(s\) within 3 s \(the first: "
        + re.escape(str(day))
        + r" line (\d+): \w+\) and sending stopped there; (\d+) were confirmed",
        text,
    )
    assert said, text
    lost, first, confirmed = map(int, said.groups())
    assert lost > 0 and confirmed >= 100 and 1 <= first <= n
    assert lost + confirmed < n  # it stopped sending
    assert "produced" not in text
    assert len(text.splitlines()) <= 25, text  # the client's complaints, once per kind
    events = d.collect(d.topics["events"], lambda v: len(v) >= lost + confirmed, timeout=15)
    # A batch whose confirmation was lost with the broker may still have been written.
    assert confirmed <= len(events) <= confirmed + lost
    if len(events) == confirmed:  # then the first unconfirmed event is not there
        first_id = orjson.loads(day.read_bytes().splitlines()[first - 1])["event_id"]
        assert first_id not in {orjson.loads(v)["event_id"] for v in events}


def _call(url: str, method: str = "GET") -> tuple[int, dict[str, Any]]:
    return call_api(url, "t0ken", method)


def test_a_terminate_the_broker_does_not_confirm_is_not_reported_recorded(
    own_broker: Any, tmp_path: Path
) -> None:
    """While the broker is away, ``POST .../terminate`` answers 503 after its wait for
    Kafka's confirmation, not 202 for an event still in the producer's buffer; once the
    broker is back the same request answers 202 with where the event is."""
    d = Deployment(own_broker.bootstrap, 2, tmp_path / "d")
    d.tmp.mkdir()
    d.env["SESSIONWATCH_API_TOKEN"] = "t0ken"
    port = free_port()
    login = tmp_path / "login.jsonl"
    login.write_bytes(
        orjson.dumps(
            {"event_id": "a1", "ts": time.time() - 60, "type": "login", "user": "alice",
             "session_id": "5D2E8A1C9F3B47E6A0D4C8B2F1E7A93C", "ip": "10.1.2.3"}
        )
        + b"\n"
    )  # fmt: skip
    try:
        d.produce(login)
        d.start_worker("w", web_port=port)
        base = f"http://127.0.0.1:{port}/sessions"
        # Started through and through (a halt during its start stops it): it has taken
        # alice's login.
        deadline = time.monotonic() + 90
        while not (listing := _call(f"{base}?user=alice"))[1].get("sessions"):
            assert time.monotonic() < deadline, (listing, d.logs())
            time.sleep(0.5)
        terminate = f"{base}/{listing[1]['sessions'][0]['session']}/terminate?user=alice"
        own_broker.halt()
        status, body = _call(terminate, "POST")
        assert status == 503, body
        assert "not confirmed within 10 s by Kafka" in body["error"], body
        own_broker.start()
        deadline = time.monotonic() + 90
        while (answer := _call(terminate, "POST"))[0] != 202:
            assert time.monotonic() < deadline, (answer, d.logs())
            time.sleep(1)
        recorded = answer[1]["recorded"]
        assert answer[1]["offset"] >= 0, answer
        events = d.collect(
            d.topics["events"],
            lambda v: recorded in {json.loads(e)["event_id"] for e in v},
            timeout=30,
        )
        assert recorded in {json.loads(e)["event_id"] for e in events}
    finally:
        d.stop()


def test_a_stop_while_the_broker_is_away_ends_in_time_and_loses_nothing(
    own_broker: Any, tmp_path: Path
) -> None:
    """SIGTERM with the broker gone: the worker cannot have its last state writes
    confirmed, and the Kafka client would hold them (and the stop) for 20 minutes. It
    exits within ``STOP_WITHIN_S`` with code 1, saying why, having committed nothing
    unconfirmed; a worker started once the broker is back, with an empty data directory
    (state from the changelog only), gives exactly replay's alerts."""
    day, expected = simulated_day(tmp_path)
    lines = day.read_bytes().splitlines(keepends=True)
    (tmp_path / "a.jsonl").write_bytes(b"".join(lines[: len(lines) // 2]))
    (tmp_path / "b.jsonl").write_bytes(b"".join(lines[len(lines) // 2 :]))
    d = Deployment(own_broker.bootstrap, 4, tmp_path / "d")
    d.tmp.mkdir()
    d.env["SESSIONWATCH_CHECKPOINT_SECONDS"] = "300"  # its changes wait for the stop
    try:
        d.produce(tmp_path / "a.jsonl")
        first = d.start_worker("first")
        d.collect(d.topics["alerts"], lambda v: len(v) >= 3)
        own_broker.halt()
        asked = time.monotonic()
        os.killpg(first.pid, signal.SIGTERM)
        code = first.wait(STOP_WITHIN_S + 30)
        took = time.monotonic() - asked
        assert code == 1 and took < STOP_WITHIN_S + 10, (code, took, d.logs())
        said = (d.tmp / "first.log").read_text(errors="replace")
        assert f"did not stop within {STOP_WITHIN_S:g} s of the signal" in said
        own_broker.start()
        d.produce(tmp_path / "b.jsonl")
        d.start_worker("second")
        got = d.collect(d.topics["alerts"], lambda v: alert_ids(v) >= expected, timeout=180)
        assert_same_alerts(got, expected, d)
    finally:
        d.stop()


class _Door:
    """A TCP door to the broker on a port of its own, for a client that bootstraps through
    it: the first connection passes (the worker's start checks), then the door is shut
    (connections refused, as by a broker that is gone) until :meth:`open`, after which
    every connection passes. The broker's metadata names its own address, so only
    bootstrapping goes through the door."""

    def __init__(self, broker: str) -> None:
        host, port = broker.rsplit(":", 1)
        self.target = (host, int(port))
        self.port = free_port()
        self._listen(once=True)

    def _listen(self, once: bool) -> None:
        server = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR: reopens
        self._server = server
        threading.Thread(target=self._accept, args=(server, once), daemon=True).start()

    def _accept(self, server: socket.socket, once: bool) -> None:
        with server:
            while True:
                try:
                    client, _ = server.accept()
                except OSError:
                    return
                upstream = socket.create_connection(self.target)
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=_pump, args=(a, b), daemon=True).start()
                if once:
                    return  # shut: the listening socket closes

    def open(self) -> None:
        self._listen(once=False)

    def close(self) -> None:
        self._server.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def test_a_worker_whose_broker_goes_away_as_faust_starts_waits_for_it(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The broker cannot be reached from the moment the worker's start checks are done,
    as Faust starts its Kafka clients, until the worker says it waits for it: the
    worker stays up, then gives replay's alerts. It used to stop with a traceback and
    exit code 1 (Faust's producer failed to start)."""
    day, expected = simulated_day(tmp_path, users=10, hours=4)
    d = Deployment(kafka_bootstrap, 2, tmp_path / "d")
    d.tmp.mkdir()
    d.produce(day)
    door = _Door(kafka_bootstrap)
    d.env["SESSIONWATCH_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{door.port}"
    try:
        worker = d.start_worker("w", quiet=False)
        _await_line(d, worker, b"Kafka went away as the worker started")
        time.sleep(3)  # tries again meanwhile
        assert worker.poll() is None, d.logs()
        door.open()
        got = d.collect(d.topics["alerts"], lambda v: alert_ids(v) >= expected, timeout=90)
        assert worker.poll() is None, d.logs()
        assert_same_alerts(got, expected, d)
        text = (d.tmp / "w.log").read_bytes()
        assert b"Traceback" not in text, d.logs()
        assert text.count(b"Kafka went away as the worker started") == 1  # said once
    finally:
        d.stop()
        door.close()
