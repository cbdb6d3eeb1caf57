"""The routing key of an event: what must live together in one partition.

Every decision about a session needs that session's state and its user's
account state (lock-out ends *all* of a user's sessions; the concurrency limit
counts them), so events that name a user are keyed by the user. Guest
sessions, and the few event types that may omit the user (a guest transaction,
an admin ``terminate``), are keyed by the session fingerprint. Keys are
prefixed so a user called like a fingerprint cannot collide with one.

>>> from detector.fingerprint import Fingerprinter
>>> from detector.events import decode
>>> fp = Fingerprinter(b"k")
>>> routing_key(decode(b'{"event_id":"1","ts":1,"type":"lockout","user":"ann"}'), fp)
'u:ann'
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from aiokafka.partitioner import murmur2 as _python_murmur2

from detector.events import Event
from detector.fingerprint import Fingerprinter
from detector.native import native_wanted


def routing_key(ev: Event, fingerprint: Fingerprinter) -> str:
    if ev.user:
        return "u:" + ev.user
    if ev.session_id:
        return "s:" + fingerprint(ev.session_id)
    return "e:" + ev.event_id  # cannot happen for a valid event; keeps the key total


def _murmur2() -> Callable[[bytes], int]:
    """Kafka's key hash: the extension's when it is built and wanted (0.1 µs a key
    against 11 µs in the Kafka client's pure Python here), else the client's."""
    native = native_wanted()
    return native.murmur2 if native is not None else _python_murmur2  # type: ignore[no-any-return]


murmur2: Callable[[bytes], int] = _murmur2()


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` (the Java client's and
    the Kafka client's: murmur2, sign bit cleared, modulo the count)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class KeyPartitioner:
    """The Kafka client's ``DefaultPartitioner`` with :func:`murmur2`: the same partition
    for every key, so ``kcat``, Java producers and this project agree; a message without
    a key goes to a random available partition, as there."""

    def __call__(
        self, key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]
    ) -> int:
        if key is None:
            return random.choice(available or all_partitions)
        return all_partitions[partition_of(key, len(all_partitions))]
