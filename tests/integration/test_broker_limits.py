"""Settings a broker's own limits refuse are refused at the worker's start, not met with
a worker that stays up and detects nothing."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from detector.stream.clients import prepare_worker
from detector.stream.settings import StreamSettings
from tests.integration.streaming import POLICY, ROOT, Deployment, alert_ids, simulated_day
from tests.integration.test_streaming import assert_same_alerts

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def strict_broker() -> Iterator[Any]:
    """A broker that refuses group session timeouts under 20 s."""
    sys.path.insert(0, str(ROOT / "deploy" / "kafka"))
    from broker import Broker

    broker = Broker(properties={"group.min.session.timeout.ms": "20000"}).start()
    try:
        yield broker
    finally:
        broker.stop()


def test_a_failover_the_broker_refuses_stops_the_worker_with_the_range(
    strict_broker: Any, tmp_path: Path
) -> None:
    """The broker answers the worker's JoinGroup with an error the Kafka client only logs;
    the worker would then wait for partitions forever. It is refused before: exit 2, the
    broker's range and the setting to change."""
    d = Deployment(strict_broker.bootstrap, 2, tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "detector.cli", "worker", "-q", "--config", str(POLICY),
         "--data-dir", str(tmp_path / "data")],
        env={**d.env, "SESSIONWATCH_FAILOVER_SECONDS": "10"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert (
        "the brokers accept a group session timeout of 20-1800 s "
        "(group.min.session.timeout.ms, group.max.session.timeout.ms), not the failover of "
        "10 s: set SESSIONWATCH_FAILOVER_SECONDS within it"
    ) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_failover_within_the_broker_s_range_passes(strict_broker: Any) -> None:
    base = replace(StreamSettings(), bootstrap_servers=strict_broker.bootstrap)
    asyncio.run(prepare_worker(replace(base, failover_seconds=20.0)))
    asyncio.run(prepare_worker(replace(base, failover_seconds=90.0)))


@pytest.fixture(scope="module")
def guarded_broker() -> Iterator[Any]:
    """A broker with an authorizer that refuses group session timeouts under 20 s and
    lets clients do everything but read its configuration (DescribeConfigs), as managed
    clusters often do."""
    sys.path.insert(0, str(ROOT / "deploy" / "kafka"))
    from broker import Broker

    broker = Broker(
        properties={
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "true",  # topics and groups: no ACL, allowed
            "group.min.session.timeout.ms": "20000",
        }
    ).start()
    try:
        cluster = "CLUSTER:kafka-cluster"
        subprocess.run(
            ["java", "-cp", str(ROOT / "deploy" / "kafka" / "lib" / "*"),
             str(Path(__file__).with_name("Acls.java")), broker.bootstrap,
             f"ALLOW:User:ANONYMOUS:ALL:{cluster}",
             f"DENY:User:ANONYMOUS:DESCRIBE_CONFIGS:{cluster}"],
            check=True,
            capture_output=True,
            timeout=120,
        )  # fmt: skip
        yield broker
    finally:
        broker.stop()


def test_a_cluster_that_hides_its_limits_starts_the_worker_with_a_warning(
    guarded_broker: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The limits cannot be read: the check is skipped with a warning that says what to
    look at, not the start refused; a failover within the hidden limits then works."""
    base = replace(StreamSettings(), bootstrap_servers=guarded_broker.bootstrap)
    with caplog.at_level(logging.WARNING, logger="detector.stream.clients"):
        asyncio.run(prepare_worker(replace(base, failover_seconds=10.0)))
    assert "the brokers' limits on a group session could not be read" in caplog.text
    assert "the failover of 10 s is not checked" in caplog.text
    assert "SessionwatchPartitionsUnwatched" in caplog.text

    day, expected = simulated_day(tmp_path, users=10, hours=4)
    d = Deployment(guarded_broker.bootstrap, 2, tmp_path)
    d.env["SESSIONWATCH_FAILOVER_SECONDS"] = "20"
    d.produce(day)
    worker = d.start_worker("w")
    try:
        got = d.collect(d.topics["alerts"], lambda v: alert_ids(v) >= expected, timeout=120)
        assert_same_alerts(got, expected, d)
        assert worker.poll() is None, d.logs()
    finally:
        d.stop()
    assert "the failover of 20 s is not checked" in d.logs()
