"""Topics replicated as configured, on a cluster of two brokers of the test's own."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.integration.streaming import (
    POLICY,
    ROOT,
    Deployment,
    alert_ids,
    free_port,
    simulated_day,
)
from tests.integration.test_streaming import assert_same_alerts
from tests.tools import samples, scrape

pytestmark = pytest.mark.kafka


async def _describe(bootstrap: str, topics: list[str] | None = None) -> dict[str, Any]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        brokers = (await admin.describe_cluster())["brokers"]
        found = await admin.describe_topics(topics) if topics else []
    finally:
        await admin.close()
    return {"brokers": len(brokers), "topics": {t["topic"]: t for t in found}}


@pytest.fixture(scope="module")
def two_brokers() -> Iterator[Any]:
    """Node 1 (broker and controller) and node 2 (broker) of one cluster: the bootstrap
    list and the second broker."""
    sys.path.insert(0, str(ROOT / "deploy" / "kafka"))
    from broker import Broker

    # Group offsets on both, as a production cluster keeps them: with one copy, a group
    # whose coordinator is on a halted broker cannot join at all.
    both = {"offsets.topic.replication.factor": "2"}
    first = Broker(properties=both).start()
    second = Broker(properties=both, joins=first)
    try:
        second.start()
        bootstrap = f"{first.bootstrap},{second.bootstrap}"
        deadline = time.monotonic() + 60
        while asyncio.run(_describe(bootstrap))["brokers"] < 2:  # node 2 registering
            assert time.monotonic() < deadline, "the second broker did not join"
            time.sleep(0.5)
        yield bootstrap, second
    finally:
        second.stop()
        first.stop()


def test_the_worker_s_topics_have_the_configured_replication(
    two_brokers: Any, tmp_path: Path
) -> None:
    """With SESSIONWATCH_REPLICATION=2 every topic the worker and ``produce`` create,
    Faust's state changelog included, has two replicas on the two brokers, and the
    alerts are replay's."""
    bootstrap, _ = two_brokers
    day, expected = simulated_day(tmp_path, users=20, hours=8)
    d = Deployment(bootstrap, 2, tmp_path)
    d.env["SESSIONWATCH_REPLICATION"] = "2"
    d.produce(day)
    d.start_worker("w")
    try:
        got = d.collect(d.topics["alerts"], lambda v: alert_ids(v) >= expected, timeout=120)
        assert_same_alerts(got, expected, d)
        names = [*d.topics.values(), f"{d.env['SESSIONWATCH_APP_ID']}-state-changelog"]
        topics = asyncio.run(_describe(bootstrap, names))["topics"]
        replicas = {
            name: sorted({len(p["replicas"]) for p in topics[name]["partitions"]}) for name in names
        }
        assert replicas == {name: [2] for name in names}, replicas
    finally:
        d.stop()


def test_a_replication_over_the_broker_count_is_refused_with_both_counts(
    two_brokers: Any, tmp_path: Path
) -> None:
    """The broker's own answer (INVALID_REPLICATION_FACTOR) names neither count nor
    setting: refused before, exit 2, for the worker and ``produce`` alike."""
    d = Deployment(two_brokers[0], 2, tmp_path)
    env = {**d.env, "SESSIONWATCH_REPLICATION": "3"}
    day, _ = simulated_day(tmp_path, users=5, hours=1)
    says = (
        "a replication of 3 needs as many brokers and the cluster has 2: set "
        "SESSIONWATCH_REPLICATION to at most 2"
    )
    for args in (
        ["worker", "-q", "--config", str(POLICY), "--data-dir", str(tmp_path / "data")],
        ["produce", "--config", str(POLICY), str(day)],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "detector.cli", *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert proc.returncode == 2 and says in proc.stderr, (args, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr


def test_a_restart_with_a_broker_down_is_not_refused(two_brokers: Any, tmp_path: Path) -> None:
    """Once its topics exist, a worker started while one broker of the two is down (fewer
    live brokers than the replication) starts and takes its partitions: the check is
    only for topics still to be made. Runs last: it halts the module's second broker."""
    bootstrap, second = two_brokers
    day, _ = simulated_day(tmp_path, users=10, hours=4)
    d = Deployment(bootstrap, 2, tmp_path)
    d.env["SESSIONWATCH_REPLICATION"] = "2"
    d.produce(day)
    port = free_port()
    first = d.start_worker("first", web_port=port)
    try:
        _wait_assigned(port, first, d)  # the changelog made too
        d.stop()  # how it exits is the clean-stop test's subject, not this one's
        second.halt()
        d.env["SESSIONWATCH_BOOTSTRAP_SERVERS"] = bootstrap.split(",")[0]
        _wait_assigned(port, d.start_worker("again", web_port=port), d)
    finally:
        d.stop()


def _wait_assigned(port: int, worker: subprocess.Popen[bytes], d: Deployment) -> None:
    """Until the worker on ``port`` holds both partitions; it must not exit meanwhile."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert worker.poll() is None, d.logs()
        try:
            values = samples(scrape(f"http://127.0.0.1:{port}/metrics"))
            if values.get(("sessionwatch_partitions_assigned", ())) == 2:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the partitions were not assigned in 90 s\n{d.logs()}")
