"""Fixtures of the tests that run sessionwatch deployments on the real broker."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.streaming import ROOT, Deployment, Factory


@pytest.fixture
def deployment_factory(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Factory]:
    made: list[Deployment] = []

    def make(partitions: int, store: str = "rocksdb://") -> Deployment:
        d = Deployment(kafka_bootstrap, partitions, tmp_path / f"d{len(made)}", store)
        d.tmp.mkdir()
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()


@pytest.fixture(scope="session")
def secure_kafka() -> Iterator[Any]:
    """A broker of our own with SSL and SASL_SSL (SCRAM) listeners, even when
    ``KAFKA_BOOTSTRAP_SERVERS`` names a plain one: the point is to test the handshakes."""
    sys.path.insert(0, str(ROOT / "deploy" / "kafka"))
    from broker import Broker

    broker = Broker(secure=True).start()
    try:
        yield broker
    finally:
        broker.stop()
