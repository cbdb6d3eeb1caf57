"""Fixtures of the tests that run sessionwatch deployments on the real broker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.streaming import Deployment, Factory


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
