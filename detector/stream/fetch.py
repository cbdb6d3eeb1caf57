"""Fetched record batches of the worker's own topics, decoded in one call per partition.

The Kafka client decodes a fetch lazily, a generator step and a ``ConsumerRecord`` per
record (about 3 µs each here, more than half of what a plain consumer spends per record).
For the topics registered with :func:`decode_topic`, a partition's fetched bytes are
decoded at once by the compiled extension (``decode_batches``) into records with the
same attributes. Only the common case is taken (uncompressed, non-transactional batches
of format v2 with valid CRCs); for anything else, or without the extension, the client's
own decoder takes the fetch, with its own checks and errors.

Installed by patching two names of the client's fetcher module (its buffer type, to keep
the fetched bytes, and its per-partition record iterator) and ``FetchResult.getall``, which
then hands out the decoded records as one slice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiokafka.consumer import fetcher as client_fetcher
from aiokafka.record.memory_records import MemoryRecords

from detector.native import native_module

#: Topics whose fetches are decoded here (the worker's direct topics).
DECODED_TOPICS: set[str] = set()

_native = native_module()
_decode: Callable[..., tuple[list[Any], int] | None] | None = (
    _native.decode_batches if _native is not None else None
)
_ClientPartitionRecords = client_fetcher.PartitionRecords
_client_getall = client_fetcher.FetchResult.getall


def decode_topic(topic: str, native: bool = True) -> None:
    """Has ``topic``'s fetches decoded here (``native``, when the extension is there) or
    by the Kafka client (``SESSIONWATCH_DECODE``; tests run both in one process)."""
    if native and _decode is not None:
        DECODED_TOPICS.add(topic)
    else:
        DECODED_TOPICS.discard(topic)


class _KeptMemoryRecords(MemoryRecords):  # type: ignore[misc]
    """The client's fetch buffer, keeping the fetched bytes for :func:`_partition_records`."""

    __slots__ = ("raw",)

    def __init__(self, raw: Any) -> None:
        super().__init__(raw)
        self.raw = raw


class DecodedRecords:
    """A partition's fetch decoded at once, in the place of the client's
    ``PartitionRecords``: ``next_fetch_offset`` is where the client's position goes once
    the records taken so far are consumed (after the last batch once all are)."""

    __slots__ = ("_at", "_end", "_records", "next_fetch_offset")

    def __init__(self, records: list[Any], end: int, fetch_offset: int) -> None:
        self._records, self._at, self._end = records, 0, end
        self.next_fetch_offset = fetch_offset

    def take(self, max_records: int | None) -> list[Any]:
        """The next ``max_records`` records (all when None)."""
        records, at = self._records, self._at
        if max_records is None or at + max_records >= len(records):
            taken = records[at:] if at else records
            self._records, self._at = [], 0
            self.next_fetch_offset = self._end
            return taken
        taken = records[at : at + max_records]
        self._at = at + max_records
        self.next_fetch_offset = taken[-1].offset + 1
        return taken

    @property
    def exhausted(self) -> bool:
        return not self._records

    def __iter__(self) -> DecodedRecords:
        return self

    def __next__(self) -> Any:
        """One record (the client's ``FetchResult.getone``)."""
        if not self._records:
            self.next_fetch_offset = self._end
            raise StopIteration
        return self.take(1)[0]


def _partition_records(
    tp: Any,
    records: Any,
    aborted_transactions: Any,
    fetch_offset: int,
    key_deserializer: Any,
    value_deserializer: Any,
    check_crcs: bool,
    isolation_level: Any,
) -> Any:
    """The client's ``PartitionRecords(...)``, decoded here for a registered topic."""
    if (
        _decode is not None
        and tp.topic in DECODED_TOPICS
        and key_deserializer is None
        and value_deserializer is None
        and type(records) is _KeptMemoryRecords
        and type(records.raw) is bytes
    ):
        decoded = _decode(records.raw, fetch_offset, check_crcs, tp.topic, tp.partition)
        if decoded is not None:
            return DecodedRecords(decoded[0], decoded[1], fetch_offset)
    return _ClientPartitionRecords(
        tp,
        records,
        aborted_transactions,
        fetch_offset,
        key_deserializer,
        value_deserializer,
        check_crcs,
        isolation_level,
    )


def _getall(self: Any, max_records: int | None = None) -> list[Any]:
    """The client's ``FetchResult.getall``, taking decoded records as one slice."""
    decoded = self._partition_records
    if type(decoded) is not DecodedRecords:
        return _client_getall(self, max_records)  # type: ignore[no-any-return]
    if not self.check_assignment(self._topic_partition):
        return []
    taken = decoded.take(max_records)
    self._update_position()
    if decoded.exhausted:
        self._partition_records = None
    return taken


def install() -> None:
    """Patches the client's fetcher (idempotent; without the extension, nothing)."""
    if _decode is None:
        return
    client_fetcher.MemoryRecords = _KeptMemoryRecords
    client_fetcher.PartitionRecords = _partition_records
    client_fetcher.FetchResult.getall = _getall
