"""Factories that keep the streaming tests short: isolated topics, workers, produce, collect."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from detector.simulate import Simulation

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "examples" / "policy.toml"
KEY = "integration-test-key"


def call_api(url: str, token: str, method: str = "GET") -> tuple[int, dict[str, Any]]:
    """A session API call with ``token``: the status and JSON body; (0, {}) while nothing
    answers (a worker starting, or stopped)."""
    req = urllib.request.Request(url, method=method, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
    except (urllib.error.URLError, ConnectionError):
        return 0, {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Deployment:
    """One isolated sessionwatch deployment: its own topics and app id on the shared broker."""

    def __init__(self, bootstrap: str, partitions: int, tmp: Path, store: str = "rocksdb://"):
        tag = uuid.uuid4().hex[:8]
        self.bootstrap = bootstrap
        self.partitions = partitions
        self.tmp = tmp
        self.env = dict(os.environ)
        self.env.update(
            SESSIONWATCH_BOOTSTRAP_SERVERS=bootstrap,
            SESSIONWATCH_KEY=KEY,
            SESSIONWATCH_PARTITIONS=str(partitions),
            SESSIONWATCH_APP_ID=f"sw-{tag}",
            SESSIONWATCH_TOPIC_EVENTS=f"events-{tag}",
            SESSIONWATCH_TOPIC_ALERTS=f"alerts-{tag}",
            SESSIONWATCH_TOPIC_ACTIONS=f"actions-{tag}",
            SESSIONWATCH_TOPIC_DLQ=f"dlq-{tag}",
            SESSIONWATCH_STORE=store,
        )
        self.workers: list[subprocess.Popen[bytes]] = []

    @property
    def topics(self) -> dict[str, str]:
        return {
            k: self.env[f"SESSIONWATCH_TOPIC_{k.upper()}"]
            for k in ("events", "alerts", "actions", "dlq")
        }

    def cli(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "detector.cli", *args],
            env=self.env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            **kw,
        )

    def start_worker(
        self, name: str = "w0", web_port: int | None = None, quiet: bool = True
    ) -> subprocess.Popen[bytes]:
        """A worker logging to ``{name}.log`` in the deployment's directory (warnings and
        worse, or everything unless ``quiet``)."""
        data = self.tmp / f"data-{name}"
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "detector.cli",
                "worker",
                *(["-q"] if quiet else []),
                "--config",
                str(POLICY),
                "--data-dir",
                str(data),
                "--web-port",
                str(web_port or free_port()),
            ],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(proc)
        return proc

    def produce(self, path: Path, *extra: str) -> None:
        self.cli("produce", "--config", str(POLICY), *extra, str(path))

    def stop(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in self.tmp.glob("*.log"))

    def collect(
        self, topic: str, until: Callable[[list[bytes]], bool], timeout: float = 120.0
    ) -> list[bytes]:
        """Reads ``topic`` from the beginning until ``until(values)`` holds or time runs out."""
        return collect(self.bootstrap, topic, until, timeout)


def collect(
    bootstrap: str, topic: str, until: Callable[[list[bytes]], bool], timeout: float = 120.0
) -> list[bytes]:
    """Reads ``topic`` from the beginning until ``until(values)`` holds or time runs out."""
    values: list[bytes] = []
    # An aiokafka call once hung around a rebalance: bound it, return what arrived.
    with contextlib.suppress(TimeoutError):
        asyncio.run(
            asyncio.wait_for(_collect(bootstrap, topic, until, timeout, values), timeout + 30)
        )
    return values


def collect_records(bootstrap: str, topic: str, count: int, timeout: float = 60.0) -> list[Any]:
    """The first ``count`` records of ``topic`` (all partitions), as the Kafka client gives
    them (partition, key, value...)."""
    records: list[Any] = []
    with contextlib.suppress(TimeoutError):
        asyncio.run(
            asyncio.wait_for(
                _collect(bootstrap, topic, lambda v: len(v) >= count, timeout, records, True),
                timeout + 30,
            )
        )
    return records


async def _collect(
    bootstrap: str,
    topic: str,
    until: Callable[[list[Any]], bool],
    timeout: float,
    values: list[Any],
    whole: bool = False,
) -> None:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        request_timeout_ms=10_000,
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                values.extend(records if whole else (r.value for r in records))
            if until(values):
                break
    finally:
        await consumer.stop()


async def send_tombstone(bootstrap: str, topic: str, key: bytes) -> None:
    """A record with no value at all (Kafka's delete marker for ``key``) on ``topic``."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value=None, key=key)
    finally:
        await producer.stop()


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def produce_in_transactions(
    bootstrap: str,
    topic: str,
    partitions: int,
    lines: list[bytes],
    keys: Sequence[bytes | None],
    per_transaction: int,
) -> None:
    """Creates ``topic`` and writes ``lines`` through a transactional producer. Every
    committed transaction leaves a commit marker in each partition it wrote: an offset
    with no record, which a consumer sees as a hole."""
    await create_topic(bootstrap, topic, partitions)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"tx-{topic}")
    await producer.start()
    try:
        for i in range(0, len(lines), per_transaction):
            async with producer.transaction():
                for line, key in zip(
                    lines[i : i + per_transaction], keys[i : i + per_transaction], strict=True
                ):
                    await producer.send(topic, value=line, key=key)
    finally:
        await producer.stop()


class Expected(set[str]):
    """Alert ids replay finds, with ``kind@event_id`` of each for failure messages."""

    def __init__(self, detail: dict[str, str]) -> None:
        super().__init__(detail)
        self.detail = detail


def simulated_day(
    tmp: Path, users: int = 60, seed: int = 5, hours: float = 24, behaviour_attacks: int = 0
) -> tuple[Path, Expected]:
    """A labelled simulated day (or more) on disk and the alert ids replay finds in it."""
    buf = io.BytesIO()
    Simulation(users=users, hours=hours, seed=seed, behaviour_attacks=behaviour_attacks).write(buf)
    path = tmp / "day.jsonl"
    path.write_bytes(buf.getvalue())
    os.environ.setdefault("SESSIONWATCH_KEY", KEY)
    from detector.engine import Engine
    from detector.fingerprint import Fingerprinter
    from detector.policy import Policy
    from detector.replay import Replayer

    alerts: list[Any] = []
    Replayer(
        Engine(Policy.load(POLICY), Fingerprinter(KEY.encode())), alerts.append, lambda d: None
    ).feed(buf.getvalue().splitlines(), "day")
    return path, Expected({a.alert_id: f"{a.kind}@{a.event_id}" for a in alerts})


def alert_ids(values: list[bytes]) -> set[str]:
    return {orjson.loads(v)["alert_id"] for v in values}


Factory = Callable[..., Deployment]
