"""Where keyed messages go: Kafka's default partitioner, with the key hash compiled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as python_murmur2
from hypothesis import given
from hypothesis import strategies as st

from detector.stream import routing
from detector.stream.routing import KeyPartitioner, partition_of


@given(st.binary(max_size=200))
def test_the_compiled_hash_is_the_kafka_client_s(key: bytes) -> None:
    """Every length modulo 4 (the tail bytes), zero bytes and high bytes included."""
    native = pytest.importorskip("sessionwatch_native")
    assert native.murmur2(key) == python_murmur2(key)


def test_the_partitioner_hashes_with_the_extension_when_it_is_built() -> None:
    native = pytest.importorskip("sessionwatch_native")
    assert routing.murmur2 is native.murmur2


@given(st.binary(min_size=0, max_size=80), st.integers(min_value=1, max_value=64))
def test_keyed_messages_go_where_the_kafka_client_s_partitioner_puts_them(
    key: bytes, count: int
) -> None:
    """So kcat, Java producers, the worker's alerts and produce's events agree."""
    everywhere = list(range(count))
    expected = DefaultPartitioner()(key, everywhere, everywhere)
    assert KeyPartitioner()(key, everywhere, everywhere[:1]) == expected
    assert partition_of(key, count) == expected


def test_a_message_without_a_key_goes_to_an_available_partition() -> None:
    partitioner = KeyPartitioner()
    assert {partitioner(None, [0, 1, 2, 3], [2]) for _ in range(50)} == {2}
    assert {partitioner(None, [0, 1], []) for _ in range(200)} == {0, 1}


def test_the_worker_s_producer_uses_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Alerts and actions are keyed by session: each send hashes its key."""
    from detector.policy import Policy
    from detector.stream.app import create_app
    from detector.stream.settings import StreamSettings

    monkeypatch.setenv("SESSIONWATCH_KEY", "k")
    settings = StreamSettings()
    settings.data_dir = str(tmp_path)
    conf: Any = create_app(settings, Policy.load(None)).conf  # its Params confuse mypy
    assert isinstance(conf.producer_partitioner, KeyPartitioner)
