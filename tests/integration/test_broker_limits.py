"""Settings a broker's own limits refuse are refused at the worker's start, not met with
a worker that stays up and detects nothing."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from detector.stream.clients import prepare_worker
from detector.stream.settings import StreamSettings
from tests.integration.streaming import POLICY, ROOT, Deployment

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
