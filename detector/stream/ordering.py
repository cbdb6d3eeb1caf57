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

The first event of a partition in each generation must be the one at the group's
committed offset. Around a rebalance Faust delivers from wherever its fetcher
happens to be (events prefetched before the rebalance are skipped, not
re-fetched), and it knows the committed offset only once it has sought to it,
some time after the assignment; so when it does not know it yet, the start is
looked up in Kafka before anything of that partition applies.

A hole shows only when a later event arrives. When Faust drops the *tail* of a
partition (fetched, then discarded at a rebalance, its position moved past), no
later event comes until the source writes again; so the agent also watches for a
partition whose end offset stays ahead of what it applied without progress although
the Kafka client has handed Faust everything up to that end, and has Faust read it
again from there.

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
    # First missing offset; None: where the group resumes the partition (its committed
    # offset, or the log start), which Faust did not know when the event came.
    start: int | None
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
            if committed is None:  # the commit must be looked up before anything applies
                return self._open(partition, None, offset, item)
            expected = min(committed, offset)
        if offset < expected:  # re-delivered: the bundle's offset decides what to re-send
            self._next[partition] = expected
            return Verdict.APPLY
        if offset == expected:
            self._next[partition] = offset + 1
            return Verdict.APPLY
        self._next[partition] = expected
        return self._open(partition, expected, offset, item)

    def next_in_line(self, partition: int, offset: int) -> bool:
        """True, and the partition moves on, when ``offset`` is the one expected and
        nothing is held: :meth:`admit`'s common verdict (APPLY), decided with two
        lookups. Otherwise nothing changes and :meth:`admit` decides."""
        if self._next.get(partition) == offset and partition not in self._held:
            self._next[partition] = offset + 1
            return True
        return False

    def next_run(self, partition: int, first: int, last: int, count: int) -> bool:
        """:meth:`next_in_line` for a whole run of ``count`` records, offsets ``first`` to
        ``last`` in order: True, and the partition moves past it, when it starts at the
        offset expected and has no gap (a fetch's run of a partition, as a rule)."""
        if (
            self._next.get(partition) == first
            and last - first == count - 1
            and partition not in self._held
        ):
            self._next[partition] = last + 1
            return True
        return False

    def _open(self, partition: int, start: int | None, end: int, item: Any) -> Verdict:
        self._held[partition] = [item]
        self._holes[partition] = Hole(partition, start, end)
        self.holes_found += 1
        return Verdict.FILL

    def expected(self, partition: int) -> int | None:
        """The next offset to apply, None before the generation's first event."""
        return self._next.get(partition)

    def passed(self, partition: int, end: int) -> None:
        """Offsets up to ``end`` hold no record (read back and found empty)."""
        if partition in self._next and partition not in self._holes:
            self._next[partition] = max(self._next[partition], end)

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
