"""Suite-wide fixtures: a real Kafka broker, started once per run when a test needs it.

Property tests run derandomized and without per-example deadlines: the same examples on
every run (a failure reproduces), and a busy shared machine cannot fail one by timing.
Set ``HYPOTHESIS_PROFILE=explore`` to draw fresh examples when hunting for bugs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("deterministic", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """``KAFKA_BOOTSTRAP_SERVERS`` if set, else a fresh single-node broker on 127.0.0.1."""
    existing = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if existing:
        yield existing
        return
    sys.path.insert(0, str(ROOT / "deploy" / "kafka"))
    from broker import Broker

    broker = Broker().start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()
