"""The extension's decoding of fetched record batches against the Kafka client's own.

Batches are built with the client's own builders (the bytes a broker returns for a
fetch); every decoded record must equal, attribute by attribute, what the client's
``PartitionRecords`` yields, and anything but the common case must be left to it.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.consumer import fetcher as client_fetcher
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.legacy_records import LegacyRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c
from aiokafka.structs import TopicPartition

from detector.native import native_module
from detector.stream import fetch

native = native_module()
pytestmark = pytest.mark.skipif(native is None, reason="needs the compiled extension")

TP = TopicPartition("session-events", 3)
ATTRIBUTES = (
    "topic",
    "partition",
    "offset",
    "timestamp",
    "timestamp_type",
    "key",
    "value",
    "checksum",
    "serialized_key_size",
    "serialized_value_size",
    "headers",
)


def batch(
    base: int,
    n: int,
    *,
    compression: int = 0,
    transactional: bool = False,
    producer_id: int = -1,
    log_append: bool = False,
    gaps: int = 1,
) -> bytes:
    """A v2 batch of ``n`` records at ``base``, ``base + gaps``...: keys, values and
    headers of every shape (null key, null value, empty value, non-ASCII, headers)."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=compression,
        is_transactional=int(transactional),
        producer_id=producer_id,
        producer_epoch=0 if producer_id >= 0 else -1,
        base_sequence=0 if producer_id >= 0 else -1,
        batch_size=2**22,
    )
    for i in range(n):
        key = None if i % 5 == 0 else f"user-{i}".encode()
        value = None if i % 11 == 0 else b"" if i % 13 == 0 else f'{{"n": {i}, "é": 1}}'.encode()
        headers = [("h", b"x"), ("é", None)] if i % 7 == 0 else []
        builder.append(
            i * gaps, timestamp=1_700_000_000_000 + 3 * i, key=key, value=value, headers=headers
        )
    data = bytearray(builder.build())
    data[0:8] = base.to_bytes(8, "big")
    if log_append:
        attributes = int.from_bytes(data[21:23], "big") | 0x08
        data[21:23] = attributes.to_bytes(2, "big")
        data[17:21] = _crc(bytes(data[21:])).to_bytes(4, "big")
    return bytes(data)


def _crc(data: bytes) -> int:
    return int(calc_crc32c(data))


def client_records(buffer: bytes, fetch_offset: int) -> tuple[list[tuple[Any, ...]], int]:
    records = client_fetcher.PartitionRecords(
        TP, MemoryRecords(buffer), [], fetch_offset, None, None, True, "read_uncommitted"
    )
    out = [attrs(r) for r in records]
    return out, records.next_fetch_offset


def decoded_records(buffer: bytes, fetch_offset: int) -> tuple[list[tuple[Any, ...]], int] | None:
    assert native is not None
    decoded = native.decode_batches(buffer, fetch_offset, True, TP.topic, TP.partition)
    if decoded is None:
        return None
    records, end = decoded
    return [attrs(r) for r in records], end


def attrs(record: Any) -> tuple[Any, ...]:
    return tuple(
        tuple(getattr(record, a)) if a == "headers" else getattr(record, a) for a in ATTRIBUTES
    )


@pytest.mark.parametrize(
    ("buffer", "fetch_offset"),
    [
        (batch(0, 1), 0),
        (batch(0, 300), 0),
        (batch(0, 300) + batch(300, 200) + batch(500, 1), 0),
        (batch(1000, 300) + batch(1300, 50), 1120),  # from inside the first batch
        (batch(0, 100, log_append=True), 0),
        (batch(40, 100, gaps=3), 40),  # a compacted topic's gaps
        (batch(0, 100, producer_id=7), 0),  # idempotent, not transactional
        (batch(0, 100) + batch(100, 100)[:-9], 0),  # the last batch cut off by the fetch
        (batch(0, 100) + batch(100, 100)[:5], 0),  # ... before its length
        (batch(2**40, 10), 2**40),
    ],
)
def test_decoded_records_are_the_clients(buffer: bytes, fetch_offset: int) -> None:
    expected = client_records(buffer, fetch_offset)
    assert expected[0], "a case with no record proves nothing"
    assert decoded_records(buffer, fetch_offset) == expected


@pytest.mark.parametrize(
    "buffer",
    [
        batch(0, 50, compression=1),  # gzip
        batch(0, 50, transactional=True, producer_id=3),
        batch(0, 50) + batch(50, 50, transactional=True, producer_id=3),  # any batch
    ],
)
def test_anything_but_the_common_case_is_left_to_the_client(buffer: bytes) -> None:
    assert decoded_records(buffer, 0) is None
    assert client_records(buffer, 0)[0]  # which reads it


def test_a_legacy_format_fetch_is_left_to_the_client() -> None:
    builder = LegacyRecordBatchBuilder(magic=1, compression_type=0, batch_size=2**20)
    for i in range(5):
        builder.append(i, timestamp=1_700_000_000_000, key=None, value=b"v")
    assert decoded_records(bytes(builder.build()), 0) is None


def test_a_corrupt_batch_is_left_to_the_client_which_raises() -> None:
    good = batch(0, 50)
    corrupt = bytearray(good + batch(50, 50))
    corrupt[len(good) + 200] ^= 0x01
    assert decoded_records(bytes(corrupt), 0) is None
    with pytest.raises(CorruptRecordException):
        client_records(bytes(corrupt), 0)


def test_a_malformed_record_inside_a_valid_crc_is_left_to_the_client() -> None:
    data = bytearray(batch(0, 3))
    data[61] = 0x7F  # the first record's length, beyond the batch
    data[17:21] = _crc(bytes(data[21:])).to_bytes(4, "big")
    assert decoded_records(bytes(data), 0) is None


class _Assignment:
    """The client's subscription state, as far as ``FetchResult`` reads it."""

    def __init__(self, position: int) -> None:
        self.active = True
        self.state = type("State", (), {"paused": False, "position": position})()
        self.state.consumed_to = lambda offset: setattr(self.state, "position", offset)

    def state_value(self, tp: Any) -> Any:
        return self.state


def fetch_result(buffer: bytes, fetch_offset: int) -> tuple[Any, _Assignment]:
    """A FetchResult as the client's fetcher makes it, through the patched names."""
    fetch.install()
    assignment = _Assignment(fetch_offset)
    records = client_fetcher.MemoryRecords(buffer)
    partition_records = client_fetcher.PartitionRecords(
        TP, records, [], fetch_offset, None, None, True, "read_uncommitted"
    )
    result = client_fetcher.FetchResult(
        TP, assignment=assignment, partition_records=partition_records, backoff=0
    )
    return result, assignment


@pytest.mark.parametrize("decoded", [True, False])
def test_getall_and_getone_move_the_position_as_the_client_does(decoded: bool) -> None:
    buffer = batch(1000, 300) + batch(1300, 50)
    if decoded:
        fetch.DECODED_TOPICS.add(TP.topic)
    else:
        fetch.DECODED_TOPICS.discard(TP.topic)
    try:
        result, assignment = fetch_result(buffer, 1100)
        assert (type(result._partition_records) is fetch.DecodedRecords) is decoded
        first = result.getall(max_records=120)
        assert [r.offset for r in first] == list(range(1100, 1220))
        assert assignment.state.position == 1220
        one = result.getone()
        assert one.offset == 1220 and assignment.state.position == 1221
        rest = result.getall()
        assert [r.offset for r in rest] == list(range(1221, 1350))
        assert assignment.state.position == 1350
        assert not result.has_more()  # the fetcher then drops it and fetches again
    finally:
        fetch.DECODED_TOPICS.discard(TP.topic)


def test_a_position_moved_since_the_fetch_returns_nothing() -> None:
    fetch.DECODED_TOPICS.add(TP.topic)
    try:
        result, assignment = fetch_result(batch(0, 10), 0)
        assignment.state.position = 5  # a seek after the fetch
        assert result.getall() == []
        assert not result.has_more()
    finally:
        fetch.DECODED_TOPICS.discard(TP.topic)


def test_an_unregistered_topic_keeps_the_clients_decoder() -> None:
    fetch.DECODED_TOPICS.discard(TP.topic)
    result, _ = fetch_result(batch(0, 10), 0)
    assert type(result._partition_records) is fetch._ClientPartitionRecords
    assert len(result.getall()) == 10
