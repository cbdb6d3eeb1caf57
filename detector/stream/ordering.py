"""Each partition's events in offset order, none skipped, whatever Faust delivers.

faust-streaming 0.15 can hand an agent a partition's events with one missing
(seen here: offset n-1, then n+1, in a worker's first generation after a crash,
with no rebalance in between), and its commit logic then steps over a single
un-acked offset. A skipped login means a lost alert *and* a false
``unknown_session`` for the events after it, so the agent does not trust the
delivery order: it applies an event only when its offset is the next one it
expects for that partition. An event past a hole is *held* (not acked, so not
committed) while the hole's records are read back from Kafka directly; then the
records and the held events are applied in order. Offsets Kafka does not have
(transaction markers, compaction) are simply absent from that read.

This module is the bookkeeping only; the agent in :mod:`detector.stream.app`
does the reading and applying.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


class Verdict(Enum):
    APPLY = "apply"  # the next offset, or one already applied (deduplicated downstream)
    HOLD = "hold"  # waits behind a hole being filled
    FILL = "fill"  # opens a hole: read [Hole.start, Hole.end) from Kafka, then release


@dataclass(frozen=True, slots=True)
class Hole:
    partition: int
    start: int  # first missing offset
    end: int  # offset of the event that revealed the hole (not missing)


class OffsetGate:
    """Per-partition expected offsets and the events held behind a hole."""

    def __init__(self) -> None:
        self._next: dict[int, int] = {}
        self._held: dict[int, list[Any]] = {}
        self._holes: dict[int, Hole] = {}
        self.holes_found = 0
        self.records_filled = 0

    def reset(self) -> None:
        """Forgets everything: partitions changed hands. Held events were never acked,
        so Kafka re-delivers them to whichever worker now owns their partition."""
        self._next.clear()
        self._held.clear()
        self._holes.clear()

    def admit(self, partition: int, offset: int, item: Any, committed: int | None) -> Verdict:
        """Where ``item`` (the event at ``offset``) goes. ``committed`` is the partition's
        committed offset, which is where the first event of a generation must start."""
        held = self._held.get(partition)
        if held is not None:
            held.append(item)
            return Verdict.HOLD
        expected = self._next.get(partition)
        if expected is None:
            expected = committed if committed is not None and committed <= offset else offset
        if offset < expected:  # re-delivered: the bundle's offset decides what to re-send
            self._next[partition] = expected
            return Verdict.APPLY
        if offset == expected:
            self._next[partition] = offset + 1
            return Verdict.APPLY
        self._next[partition] = expected
        self._held[partition] = [item]
        self._holes[partition] = Hole(partition, expected, offset)
        self.holes_found += 1
        return Verdict.FILL

    def hole(self, partition: int) -> Hole | None:
        return self._holes.get(partition)

    def filled(self, hole: Hole, records: int) -> list[Any]:
        """Closes ``hole`` once its ``records`` were applied; returns the held events, in
        arrival order, for the caller to admit again (a second hole may open among them)."""
        if self._holes.get(hole.partition) != hole:
            return []  # reset meanwhile: the partition moved
        del self._holes[hole.partition]
        self._next[hole.partition] = hole.end
        self.records_filled += records
        return self._held.pop(hole.partition)

    @property
    def held(self) -> int:
        return sum(map(len, self._held.values()))
