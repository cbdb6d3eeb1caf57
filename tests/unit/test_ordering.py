"""The worker's per-partition ordering gate: in order, re-deliveries, holes, resets."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiokafka.consumer.subscription_state import SubscriptionState
from aiokafka.structs import TopicPartition
from faust.types import TP

import detector.stream.app as app_module
from detector.metrics import Metrics
from detector.stream.app import InOrder, client_position
from detector.stream.ordering import Hole, OffsetGate, Verdict
from detector.stream.settings import StreamSettings


def test_in_order_events_are_applied_and_re_deliveries_pass_to_the_bundles() -> None:
    gate = OffsetGate()
    assert [gate.admit(0, o, o, 5) for o in (5, 6, 7)] == [Verdict.APPLY] * 3
    # Re-delivered after a crash or a read-back: applied again, the bundle's offset
    # decides that nothing changes; the expected offset does not move back.
    assert gate.admit(0, 6, 6, None) is Verdict.APPLY
    assert gate.admit(0, 8, 8, None) is Verdict.APPLY
    assert gate.holes_found == 0 and gate.held == 0


def test_next_in_line_is_admits_apply_verdict_for_the_expected_offset() -> None:
    """The agent asks ``next_in_line`` first and ``admit`` otherwise: over random
    deliveries (in order, repeated, skipping ahead, with holes filled now and then) that
    decides exactly as ``admit`` alone, and leaves the gate in the same state."""
    rng = random.Random(7)
    plain, quick = OffsetGate(), OffsetGate()
    for _ in range(5000):
        partition = rng.randrange(3)
        expected = plain.expected(partition)
        offset = (expected or 0) + rng.choice((0, 0, 0, 0, -1, 1, 2))
        committed = rng.choice((None, expected or 0))
        verdict = plain.admit(partition, offset, offset, committed)
        if quick.next_in_line(partition, offset):
            assert verdict is Verdict.APPLY
        else:
            assert quick.admit(partition, offset, offset, committed) is verdict
        hole = plain.hole(partition)
        if hole is not None and rng.random() < 0.3:
            assert plain.filled(hole, 1) == quick.filled(hole, 1)
        assert plain._next == quick._next and plain._held == quick._held


def test_a_run_in_line_moves_the_gate_as_its_records_would_one_by_one() -> None:
    """The agent asks ``next_run`` for a fetch's run of a partition and, if it says no,
    goes record by record: over random runs (in line, repeated, with gaps, behind a
    hole) that decides as records alone would, and a run said no to changes nothing."""
    rng = random.Random(11)
    plain, quick = OffsetGate(), OffsetGate()
    for _ in range(3000):
        partition = rng.randrange(3)
        start = (plain.expected(partition) or 0) + rng.choice((0, 0, 0, -2, 1))
        offsets = list(range(start, start + rng.randrange(1, 6)))
        if rng.random() < 0.2 and len(offsets) > 2:
            del offsets[1]  # a gap inside the run
        committed = rng.choice((None, plain.expected(partition) or 0))
        before = (dict(quick._next), {p: list(h) for p, h in quick._held.items()})
        whole = quick.next_run(partition, offsets[0], offsets[-1], len(offsets))
        if not whole:
            assert (quick._next, quick._held) == before
        for offset in offsets:
            in_line = plain.next_in_line(partition, offset)
            if not in_line:
                verdict = plain.admit(partition, offset, offset, committed)
                if not whole:
                    assert quick.admit(partition, offset, offset, committed) is verdict
            elif not whole:
                assert quick.next_in_line(partition, offset)
            if whole:
                assert in_line  # every record of a run said yes to is in line
        hole = plain.hole(partition)
        if hole is not None and rng.random() < 0.3:
            assert plain.filled(hole, 1) == quick.filled(hole, 1)
        assert plain._next == quick._next and plain._held == quick._held


def test_a_missing_offset_holds_the_partition_until_filled() -> None:
    gate = OffsetGate()
    assert gate.admit(2, 47, "e47", 47) is Verdict.APPLY
    assert gate.admit(2, 49, "e49", None) is Verdict.FILL
    assert gate.hole(2) == Hole(2, 48, 49)
    # Later events of that partition wait; other partitions go on.
    assert gate.admit(2, 50, "e50", None) is Verdict.HOLD
    assert gate.admit(3, 10, "f10", 10) is Verdict.APPLY
    assert gate.held == 2
    held = gate.filled(Hole(2, 48, 49), records=1)
    assert held == ["e49", "e50"]
    assert gate.hole(2) is None
    assert [gate.admit(2, o, f"e{o}", None) for o in (49, 50, 51)] == [Verdict.APPLY] * 3
    assert (gate.holes_found, gate.records_filled) == (1, 1)


def test_the_first_event_of_a_generation_starts_at_the_committed_offset() -> None:
    gate = OffsetGate()
    # Committed 100 but 103 arrives first: 100..102 were lost on the way.
    assert gate.admit(1, 103, "e103", committed=100) is Verdict.FILL
    assert gate.hole(1) == Hole(1, 100, 103)
    other = OffsetGate()
    assert other.admit(1, 100, "e100", committed=100) is Verdict.APPLY
    # Below the commit: a re-delivery, applied (deduplicated by the bundles).
    assert other.admit(1, 90, "e90", committed=100) is Verdict.APPLY
    assert other.admit(1, 101, "e101", committed=100) is Verdict.APPLY


def test_with_no_commit_known_the_first_event_waits_for_the_groups_commit() -> None:
    """Faust knows a partition's commit only once it has sought to it, some time after
    the assignment (and the group may have none): the start of the generation is looked
    up before anything applies, or a first event delivered past it would be trusted."""
    gate = OffsetGate()
    assert gate.admit(4, 587, "e587", committed=None) is Verdict.FILL
    assert gate.hole(4) == Hole(4, None, 587)
    assert gate.admit(4, 588, "e588", committed=None) is Verdict.HOLD
    assert gate.filled(Hole(4, None, 587), records=200) == ["e587", "e588"]
    assert [gate.admit(4, o, o, None) for o in (587, 588)] == [Verdict.APPLY] * 2


def test_a_second_hole_among_held_events_holds_the_rest_again() -> None:
    gate = OffsetGate()
    gate.admit(0, 1, 1, 1)
    assert gate.admit(0, 3, 3, None) is Verdict.FILL
    gate.admit(0, 6, 6, None)
    gate.admit(0, 7, 7, None)
    held = gate.filled(Hole(0, 2, 3), records=1)
    assert gate.admit(0, held[0], held[0], None) is Verdict.APPLY  # 3
    assert gate.admit(0, held[1], held[1], None) is Verdict.FILL  # 6: 4..5 missing
    assert gate.admit(0, held[2], held[2], None) is Verdict.HOLD
    assert gate.hole(0) == Hole(0, 4, 6)
    assert gate.filled(Hole(0, 4, 6), records=0) == [6, 7]


def test_reset_drops_holds_and_a_stale_fill_releases_nothing() -> None:
    gate = OffsetGate()
    gate.admit(0, 1, 1, 1)
    gate.admit(0, 5, 5, None)
    hole = gate.hole(0)
    assert hole is not None
    gate.reset()  # partitions moved while the read-back ran
    assert gate.filled(hole, records=3) == []
    assert gate.held == 0
    # The new generation starts afresh from the commit.
    assert gate.admit(0, 2, 2, committed=2) is Verdict.APPLY


class _Msg:
    def __init__(self, partition: int, offset: int, generation: int) -> None:
        self.topic, self.partition, self.offset = "events", partition, offset
        self.tp = TP("events", partition)
        self.generation_id = generation
        self.acked = False


class _Event:
    def __init__(self, msg: _Msg) -> None:
        self.message, self.value = msg, b"{}"


class _Consumer:
    def __init__(self) -> None:
        self._committed_offset: dict[object, int] = {}
        self.acks: list[tuple[int, int]] = []  # (partition, offset), in ack order

    def ack_offsets(self, tp: TP, offsets: list[int]) -> int:
        self.acks.extend((tp.partition, offset) for offset in offsets)
        return len(offsets)


class _App:
    """What InOrder reads of a Faust app around a rebalance."""

    def __init__(self) -> None:
        self.consumer_generation_id = 1
        self.rebalancing_count = 1  # the revocation before the first assignment
        self.consumer = _Consumer()


def _in_order(
    app: _App,
    applied: list[int] | None = None,
    write: Callable[[bool, bool], dict[int, int]] = lambda full, paced: {},
    runs: list[list[int]] | None = None,
) -> InOrder:
    """The agent's gate over ``app``, recording the offsets it applies (if asked) and
    writing state with ``write``; with ``runs``, an ``apply_run`` that also records each
    run it is given."""
    record = (lambda offset: None) if applied is None else applied.append

    def apply(raw: bytes, msg: Any, token: Any) -> None:
        # The token stays with the state until its write: the partition, not a record
        # (thousands of those kept alive would lengthen every full garbage collection).
        assert type(token) is int and token == msg.partition
        record(msg.offset)

    def apply_run(records: list[Any], token: Any) -> None:
        assert runs is not None
        runs.append([r.offset for r in records])
        for r in records:
            apply(r.value, r, token)

    return InOrder(
        app,  # type: ignore[arg-type]
        StreamSettings(),
        Metrics(),
        apply,
        write,
        topic="events",
        apply_run=None if runs is None else apply_run,
    )


def test_a_batch_taken_between_revocation_and_assignment_is_neither_applied_nor_acked() -> None:
    """Faust moves ``consumer_generation_id`` only at the assignment, so between a
    revocation (which counts a rebalance) and then, a batch looks current while its
    partitions may already be restoring on another worker: applying it would race that
    worker's changelog writes. It is dropped unacked, like a batch of an older generation."""
    applied: list[int] = []
    app = _App()
    in_order = _in_order(app, applied)
    app.consumer._committed_offset[("events", 0)] = 0
    in_order.take([_Event(_Msg(0, o, 1)) for o in (0, 1)])
    assert applied == [0, 1]
    app.rebalancing_count += 1  # revoked; not yet assigned: the generation is still 1
    during = [_Event(_Msg(0, o, 1)) for o in (2, 3)]
    in_order.take(during)
    assert applied == [0, 1]
    assert all(e.message.acked for e in during)  # marked so take_events does not ack them
    app.consumer_generation_id = 2
    app.consumer._committed_offset[("events", 0)] = 2
    in_order.take([_Event(_Msg(0, o, 2)) for o in (2, 3)])  # re-delivered from the commit
    assert applied == [0, 1, 2, 3]


def test_records_straight_from_a_fetch_are_taken_as_the_same_events_would_be() -> None:
    """``take_fetched`` (direct delivery, runs of Kafka client records) applies,
    holds for acks and drops exactly what ``take`` does with the same records as
    events: in order, re-delivered, first of a generation (from the commit), and taken
    between a revocation and the next assignment."""
    from aiokafka.structs import ConsumerRecord

    # (partition, offsets, generation fetched in), and what happens before the chunk.
    script: list[tuple[str, int, range, int]] = [
        ("", 0, range(5, 10), 1),
        ("", 1, range(0, 4), 1),
        ("", 1, range(4, 7), 1),  # in line: a run
        ("", 0, range(7, 12), 1),  # 7..9 again (a re-read), then 10 and 11 in line
        ("revoke", 0, range(12, 14), 1),  # its partition may be someone else's now
        ("assign", 0, range(12, 15), 2),  # from the commit (12), through _admit
        ("", 1, range(4, 6), 2),
    ]
    outcomes = []
    runs: list[list[int]] = []
    for direct, in_runs in ((False, False), (True, False), (True, True)):
        app, applied = _App(), list[int]()
        in_order = _in_order(app, applied, runs=runs if in_runs else None)
        app.consumer._committed_offset.update({("events", 0): 5, ("events", 1): 0})
        for before, partition, offsets, generation in script:
            if before == "revoke":
                app.rebalancing_count += 1
            elif before == "assign":
                app.consumer_generation_id = 2
                app.consumer._committed_offset.update({("events", 0): 12, ("events", 1): 4})
            if direct:
                records = [
                    ConsumerRecord("events", partition, o, 0, 0, b"k", b"{}", None, 1, 2, ())
                    for o in offsets
                ]
                in_order.take_fetched([(TP("events", partition), records)], generation)
            else:
                in_order.take([_Event(_Msg(partition, o, generation)) for o in offsets])
        in_order.checkpoint()
        outcomes.append((applied, app.consumer.acks, in_order.n_unacked))
    assert outcomes[0] == outcomes[1] == outcomes[2]
    # Runs in line went to apply_run whole; a re-read or a generation's first record
    # went record by record.
    assert runs == [[4, 5, 6]]
    applied, acks, _ = outcomes[1]
    assert applied == [5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 4, 5]
    # Acked as applied (state written at once here); generation 1's 12 and 13 never.
    assert acks == [(0, o) for o in (5, 6, 7, 8, 9)] + [(1, o) for o in range(7)] + [
        (0, o) for o in (7, 8, 9, 10, 11, 12, 13, 14)
    ] + [(1, 4), (1, 5)]


def test_offsets_are_acked_only_once_the_state_they_changed_is_written() -> None:
    """Applied events stay unacked (so uncommitted) while any change of their partition
    from their offset on is unwritten; each checkpoint acks, in offset order, what the
    writes made durable. A rebalance drops the rest unwritten and unacked: whoever owns
    the partition reads those events again."""
    app = _App()
    # What the store reports after each write: partition -> oldest unwritten offset.
    unwritten: list[dict[int, int]] = [{0: 1, 1: 0}, {0: 2}, {0: 2}, {}]
    calls: list[tuple[bool, bool, int]] = []

    def write(full: bool, paced: bool) -> dict[int, int]:
        calls.append((full, paced, len(app.consumer.acks)))  # acks so far: none may come first
        return unwritten.pop(0)

    in_order = _in_order(app, write=write)
    app.consumer._committed_offset.update({("events", 0): 0, ("events", 1): 0})
    batch = [_Event(_Msg(p, o, 1)) for p, o in ((0, 0), (1, 0), (0, 1), (0, 2))]
    in_order.take(batch)  # each batch rolls a checkpoint: offset 0 of partition 0
    assert all(e.message.acked for e in batch)  # take_events must not ack them
    assert calls == [(False, True, 0)] and app.consumer.acks == [(0, 0)]
    asyncio.run(in_order.checkpoint_when_idle())  # the timer's: a batch came since its last
    assert calls[-1] == (False, True, 1)
    assert app.consumer.acks == [(0, 0), (0, 1), (1, 0)]  # 0/2 still waits for its write
    asyncio.run(in_order.checkpoint_when_idle())  # none since: nothing waits for the writes
    assert calls[-1] == (False, False, 3)
    in_order.checkpoint(full=True)  # a clean stop
    assert calls[-1] == (True, True, 3) and app.consumer.acks[-1] == (0, 2)
    assert in_order.n_unacked == 0
    unwritten.append({0: 3})  # what the next batch's roll leaves unwritten
    in_order.take([_Event(_Msg(0, 3, 1))])
    assert calls[-1] == (False, True, 4) and app.consumer.acks[-1] == (0, 2)
    app.rebalancing_count += 1  # revoked before the state of 0/3 is written
    in_order.checkpoint(full=True)
    assert len(calls) == 5 and app.consumer.acks[-1] == (0, 2)
    assert in_order.n_unacked == 0 and in_order.unacked == {}


def test_an_idle_tick_writes_everything_changed_a_slice_per_step_until_a_batch_comes() -> None:
    """With no batch since the timer's last tick nothing waits for the writes, so the
    tick writes everything changed, due or not (``paced`` False: the store writes a
    slice each time), stepping the event loop between slices, until nothing is left
    (a catch-up's last seconds of changes are then written before live records come,
    not among them) or a batch comes (its own checkpoints take over)."""

    def scenario(batch_after: int | None) -> tuple[list[bool], int, InOrder, _App]:
        """Calls of the writer (paced or not), entries left unwritten, the gate and app;
        a batch comes ``batch_after`` steps of the event loop into the idle tick."""
        app = _App()
        app.consumer._committed_offset[("events", 0)] = 10
        left = [8]  # changed entries not yet written
        calls: list[bool] = []

        def write(full: bool, paced: bool) -> dict[int, int]:
            calls.append(paced)
            if not paced:
                left[0] = max(left[0] - 3, 0)  # a slice: three entries
            return {0: 10} if left[0] else {}  # offset 10 on waits while any is left

        in_order = InOrder(
            app,  # type: ignore[arg-type]
            StreamSettings(),
            Metrics(),
            lambda raw, msg, token: None,
            write,
            topic="events",
            unwritten=lambda: left[0],
        )

        async def ticks() -> None:
            in_order.take([_Event(_Msg(0, o, 1)) for o in range(10, 14)])
            await in_order.checkpoint_when_idle()  # a batch came since the last: paced
            if batch_after is not None:
                loop = asyncio.get_running_loop()
                loop.call_soon(in_order.take, [_Event(_Msg(0, 14, 1))])
            await in_order.checkpoint_when_idle()

        asyncio.run(ticks())
        return calls, left[0], in_order, app

    calls, left, in_order, app = scenario(None)
    # The batch's roll and the first tick, paced; then 8 entries in slices of 3.
    assert calls == [True, True, False, False, False] and left == 0
    assert in_order.n_unacked == 0 and app.consumer.acks[-1] == (0, 13)
    calls, left, in_order, app = scenario(0)
    # A batch came after the first slice: its roll (paced), and no more idle slices.
    assert calls == [True, True, False, True] and left == 5
    assert in_order.batch_since_tick and in_order.n_unacked == 5 and app.consumer.acks == []


def test_a_full_checkpoint_comes_when_too_much_waits_not_after_each_batch_until_delivery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past MAX_UNACKED records waiting, a checkpoint writes everything. Written records
    stay unacked until their changelog is delivered, which takes more than the next few
    batches: those must roll as usual, not write everything again each (bursts that hold
    alerts back), until a quarter of the limit has been applied since."""
    monkeypatch.setattr(app_module, "MAX_UNACKED", 8)
    app = _App()
    delivered = [False]
    fulls: list[bool] = []

    def write(full: bool, paced: bool) -> dict[int, int]:
        fulls.append(full)
        return {} if delivered[0] else {0: 0}  # written, not delivered: nothing acked

    in_order = _in_order(app, write=write)
    app.consumer._committed_offset[("events", 0)] = 0
    for offset in range(14):
        in_order.take([_Event(_Msg(0, offset, 1))])
    # Full at 8 waiting, then rolling (14 waiting) until 2 more were applied: full again.
    assert fulls == [False] * 7 + [True, False, True, False, True, False, True]
    delivered[0] = True  # the next roll acks everything
    in_order.take([_Event(_Msg(0, 14, 1))])
    assert fulls[-1] is False and in_order.n_unacked == 0


def test_acks_faust_gives_skipped_messages_at_a_rebalance_are_not_counted() -> None:
    """Faust's stream skips a message fetched before a rebalance (an older generation, or
    flow suspended while one is under way) and acks it. Counted, that ack lets Faust
    commit past events nobody processed when the partition comes back to this worker;
    the worker must not count it, so Kafka re-delivers the event from the commit."""
    import faust
    from faust.events import Event
    from faust.transport.consumer import Consumer
    from faust.types import TP
    from faust.types.tuples import ConsumerMessage

    from detector.stream import app as stream_app

    async def scenario() -> list[object]:
        app = faust.App("ack-guard", broker="kafka://127.0.0.1:1")
        consumer = cast(Consumer, app.consumer)
        tp = TP("events", 0)
        app.topics.acking_topics.add("events")  # as once the agent subscribed

        def message(offset: int, generation: int) -> ConsumerMessage:
            return ConsumerMessage(
                "events", 0, offset, 0.0, 0, [], b"k", b"v", None, 1, 1, tp,
                generation_id=generation,
            )  # fmt: skip

        def skip_and_ack(msg: ConsumerMessage) -> bool:
            return bool(Event(app, b"k", b"v", {}, msg).ack())  # Faust's skip path

        app.consumer_generation_id = 2
        app.flow_control.resume()
        seen: list[object] = []
        stale = message(7, generation=1)
        seen.append(skip_and_ack(stale))
        seen.append(stale.acked)  # nothing may ack it a second time
        app.flow_control.suspend()  # a rebalance begins
        seen.append(skip_and_ack(message(8, generation=2)))
        app.flow_control.resume()
        seen.append(skip_and_ack(message(9, generation=2)))  # processed: counted
        seen.append(list(consumer._acked[tp]))
        # Without the guard Faust counts the stale one: what the guard exists for.
        seen.append(stream_app._faust_ack(consumer, message(7, generation=1)))
        assert Consumer.ack is stream_app._ack_if_current
        return seen

    assert asyncio.run(scenario()) == [False, True, False, True, [9], True]


def test_offsets_acked_together_count_as_faust_counts_them_one_by_one() -> None:
    """The checkpoint acks each partition's written offsets in one call. Faust must then
    see what its own ``ack`` of each would have left: the same acked offsets (none below
    the commit, none twice), the same count towards its commit trigger, the same offset
    to commit; and nothing while a rebalance suspends the flow."""
    import faust
    from faust.transport.consumer import Consumer
    from faust.types.tuples import ConsumerMessage

    import detector.stream.app  # noqa: F401  (installs Consumer.ack_offsets)

    def state(consumer: Consumer, tp: TP) -> tuple[list[int], set[int], int, int | None]:
        acked, index = list(consumer._acked[tp]), set(consumer._acked_index[tp])
        n, offset = consumer._n_acked, consumer._new_offset(tp)
        return acked, index, n, offset

    def scenario(together: bool) -> list[object]:
        app = faust.App(f"acks-{together}", broker="kafka://127.0.0.1:1")
        consumer = cast(Consumer, app.consumer)
        tp = TP("events", 3)
        app.topics.acking_topics.add("events")
        app.consumer_generation_id = 1
        consumer._committed_offset[tp] = 10

        def message(offset: int) -> ConsumerMessage:
            return ConsumerMessage(
                "events", 3, offset, 0.0, 0, [], b"k", b"v", None, 1, 1, tp, generation_id=1
            )  # fmt: skip

        def ack(offsets: list[int]) -> int:
            if together:
                return cast(int, consumer.ack_offsets(tp, offsets))  # type: ignore[attr-defined]
            return sum(bool(consumer.ack(message(o))) for o in offsets)

        seen: list[object] = []
        app.flow_control.suspend()  # a rebalance under way: nothing counts
        seen.append(ack([10, 11]))
        app.flow_control.resume()
        seen.append(ack([8, 9, 10, 11, 12]))  # 8 and 9 are below the commit
        seen.append(ack([12, 13, 15]))  # 12 again
        seen.append(ack([]))
        seen.append(state(consumer, tp))
        other = TP("other", 0)  # a topic without acks
        seen.append(consumer.ack_offsets(other, [1]) if together else 0)  # type: ignore[attr-defined]
        return seen

    together, one_by_one = scenario(True), scenario(False)
    assert together == one_by_one
    assert together[:4] == [0, 3, 2, 0]
    assert together[4] == ([10, 11, 12, 13, 15], {10, 11, 12, 13, 15}, 5, 14)  # 15 waits


class _WatchedConsumer:
    def __init__(self) -> None:
        self._committed_offset: dict[object, int] = {}
        self.ends: dict[object, int] = {}
        self.sought: list[tuple[object, int]] = []
        self.acked: list[tuple[int, int]] = []

    def assignment(self) -> set[object]:
        return set(self.ends)

    def highwater(self, tp: object) -> int:
        return self.ends[tp]

    async def seek(self, tp: object, offset: int) -> None:
        self.sought.append((tp, offset))

    def ack_offsets(self, tp: TP, offsets: list[int]) -> int:
        self.acked.extend((tp.partition, offset) for offset in offsets)
        return len(offsets)


class _Kafka:
    """What a read-back finds: records at the given offsets of each partition."""

    def __init__(self, offsets: dict[int, set[int]]) -> None:
        self.offsets = offsets

    async def __call__(
        self, settings: StreamSettings, topic: str, partition: int, start: int | None, end: int
    ) -> tuple[int, list[tuple[int, bytes | None]]]:
        assert start is not None  # the watch reads from what it expects
        found = sorted(o for o in self.offsets.get(partition, ()) if start <= o < end)
        return start, [(o, b"{}") for o in found]


class _Flow:
    active = True

    def is_active(self) -> bool:
        return self.active


def _watched_app() -> tuple[_App, _WatchedConsumer]:
    app = _App()
    consumer = _WatchedConsumer()
    app.consumer = consumer  # type: ignore[assignment]
    app.rebalancing = False  # type: ignore[attr-defined]
    app.flow_control = _Flow()  # type: ignore[attr-defined]
    return app, consumer


def _watching(partition: int, committed: int, end: int) -> tuple[_WatchedConsumer, InOrder, TP]:
    """The watch over one partition whose Kafka log holds every offset before ``end``."""
    app, consumer = _watched_app()
    in_order = _in_order(app, [])
    tp = TP("events", partition)
    in_order.read_back = _Kafka({partition: set(range(end))})
    consumer._committed_offset[tp] = committed
    consumer.ends[tp] = end
    return consumer, in_order, tp


def test_a_partition_whose_events_stopped_coming_is_read_again() -> None:
    """Faust can drop the tail of a partition at a rebalance (fetched, discarded, its
    position moved on): no later event reveals the hole. The watch notices the end
    offset ahead of what was applied, with no progress over a whole interval, and has
    Faust read the partition again from there, once."""
    app, consumer = _watched_app()
    applied: list[int] = []
    in_order = _in_order(app, applied)
    busy, stuck, idle = TP("events", 0), TP("events", 1), TP("events", 2)
    marker = TP("events", 3)  # a transactional producer's last commit marker, at 4
    in_order.read_back = _Kafka({0: set(range(50)), 1: set(range(40)), 3: {0, 1, 2, 3}})
    consumer._committed_offset.update({busy: 0, stuck: 0, idle: 7, marker: 0})
    consumer.ends.update({busy: 50, stuck: 40, idle: 7, marker: 5})
    first = ((0, 0), (1, 0), (1, 1), (3, 0), (3, 1), (3, 2), (3, 3))
    in_order.take([_Event(_Msg(p, o, 1)) for p, o in first])

    def tick() -> list[tuple[object, int]]:
        asyncio.run(in_order.watch())
        return consumer.sought

    assert tick() == []  # first sighting: maybe only busy
    in_order.take([_Event(_Msg(0, 1, 1))])  # partition 0 progresses, 1 does not
    assert tick() == [(stuck, 2)]
    in_order.take([_Event(_Msg(0, 2, 1))])
    assert tick() == [(stuck, 2)]  # asked once for that state
    app.rebalancing = True  # type: ignore[attr-defined]
    assert tick() == [(stuck, 2)]  # never while a rebalance is under way
    app.rebalancing = False  # type: ignore[attr-defined]
    tick()
    assert tick() == [(stuck, 2), (busy, 3)]  # now partition 0 stopped too
    assert applied == [0, 0, 1, 0, 1, 2, 3, 1, 2]
    # Nothing to deliver behind the marker: marked done for the commit, not re-read.
    assert [a for a in consumer.acked if a[0] == 3] == [(3, o) for o in range(5)]
    assert in_order.gate.expected(3) == 5


class _Client:
    """Where Faust's aiokafka driver keeps the Kafka client (private), with aiokafka's own
    subscription state: ``client_position`` reads what aiokafka really keeps."""

    def __init__(self, tps: set[TP]) -> None:
        async def make() -> SubscriptionState:
            sub = SubscriptionState()
            sub.subscribe({tp.topic for tp in tps})
            sub.assign_from_subscribed({TopicPartition(tp.topic, tp.partition) for tp in tps})
            return sub

        self._subscription = asyncio.run(make())

    def handed_over(self, tp: TP, offset: int) -> None:
        """The client gave Faust the records before ``offset`` (its consumed position)."""
        state = self._subscription.subscription.assignment.state_value(tp)
        if not state.has_valid_position:
            state.reset_to(0)  # the fetcher's first step: the committed offset
        state.consumed_to(offset)


def test_a_partition_the_client_has_not_handed_over_yet_is_waiting_not_stalled() -> None:
    """Under a backlog the Kafka client drains one partition's fetch at a time, so a
    partition can make no progress for longer than a watch interval while its records
    wait in the client (1 of 1,000,000 events in a benchmark run was re-read that way,
    its fetched records thrown away). Only once the client has handed over everything up
    to the end offset can the rest have been dropped on the way."""
    consumer, in_order, tp = _watching(2, committed=0, end=40)
    client = _Client({tp})
    consumer._thread = SimpleNamespace(_consumer=client)  # type: ignore[attr-defined]
    assert client_position(consumer, tp) is None  # no position yet: the watch decides
    client.handed_over(tp, 2)
    in_order.take([_Event(_Msg(2, o, 1)) for o in (0, 1)])
    for _ in range(3):
        asyncio.run(in_order.watch())
    assert client_position(consumer, tp) == 2 and consumer.sought == []
    client.handed_over(tp, 40)  # all of it given to Faust, none of it arrived
    for _ in range(2):
        asyncio.run(in_order.watch())
    assert consumer.sought == [(tp, 2)]


def test_a_generation_with_no_event_at_all_is_watched_from_the_commit() -> None:
    """The whole of a newly assigned partition can be dropped: no batch at all arrives
    in the generation, so what the gate expects is the previous generation's."""
    consumer, in_order, tp = _watching(3, committed=5, end=9)
    in_order.take([_Event(_Msg(3, o, 1)) for o in (5, 6, 7, 8)])  # generation 1: all done
    in_order.app.consumer_generation_id = 2
    consumer._committed_offset[tp] = 5  # nothing committed since
    for _ in range(2):
        asyncio.run(in_order.watch())
    assert consumer.sought == [(tp, 5)]


def test_the_watch_survives_an_unreachable_broker() -> None:
    """A timer that raises stops for good: the watch logs and tries again next time."""
    consumer, in_order, tp = _watching(0, committed=0, end=9)
    in_order.take([_Event(_Msg(0, o, 1)) for o in (0, 1)])

    async def unreachable(
        settings: StreamSettings, topic: str, partition: int, start: int | None, end: int
    ) -> tuple[int, list[tuple[int, bytes | None]]]:
        raise ConnectionError("broker down")

    in_order.read_back = unreachable
    for _ in range(3):
        asyncio.run(in_order.watch())  # does not raise
    assert consumer.sought == []
    in_order.read_back = _Kafka({0: set(range(9))})  # back
    asyncio.run(in_order.watch())
    assert consumer.sought == [(tp, 2)]


def test_between_events_a_worker_left_without_events_partitions_forgets_its_census() -> None:
    """With more workers than partitions a rebalance can leave a worker none of
    ``session-events``: no batch then starts its new generation, so its timer does, and
    the sessions it counted (now counted by their new owner) leave its census. A worker
    given partitions again re-indexes what it holds, from the timer too."""
    from tests.helpers import SID, Story
    from tests.unit.test_bundle import Worker

    w = Worker({})

    def new_generation() -> None:  # the worker's: detector.stream.app.create_app
        w.store.discard()
        w.store.reset()

    app = _App()
    app.rebalancing = False  # type: ignore[attr-defined]
    assignment: set[TP] = {TP("events", 0)}
    app.consumer.assignment = lambda: assignment  # type: ignore[attr-defined]
    in_order = InOrder(
        app,  # type: ignore[arg-type]
        StreamSettings(),
        Metrics(),
        lambda raw, msg, token: None,
        lambda full, paced: {},
        new_generation,
        topic="events",
    )
    in_order.see_generation()  # generation 1 is under way: its events
    s = Story()
    for i in range(12):
        s.login(i, sid=f"{i:04d}" + SID[4:], user=f"u{i % 5}")
    w.feed(s.lines())
    counted = w.engine.census()
    assert counted.user_sessions == 12
    app_module.between_events(app, in_order, w.store, "events")
    assert w.engine.census() == counted  # nothing moved: nothing forgotten

    app.consumer_generation_id, assignment = 2, {TP("other-topic", 0)}
    app_module.between_events(app, in_order, w.store, "events")
    assert w.engine.census().user_sessions == 0
    assert in_order.generation == 2 and not w.store.scanning

    app.consumer_generation_id, assignment = 3, {TP("events", 0)}
    while True:
        app_module.between_events(app, in_order, w.store, "events")
        if not w.store.scanning:
            break
    assert w.engine.census() == counted


def test_stopping_the_fills_leaves_a_hole_s_events_unapplied_and_unacked() -> None:
    """A clean stop cancels the read-backs under way (the worker's stop_consumer): one
    that finished after Faust stopped its producer applied events whose alerts could not
    be sent. The held events stay unacked, for the next start to read from the commit."""
    app, applied = _App(), list[int]()
    in_order = _in_order(app, applied)
    release = asyncio.Event()

    async def slow_kafka(
        settings: StreamSettings, topic: str, partition: int, start: int | None, end: int
    ) -> tuple[int, list[tuple[int, bytes | None]]]:
        await release.wait()
        return start or 0, [(o, b"{}") for o in range(start or 0, end)]

    async def scenario() -> None:
        app.consumer._committed_offset[TP("events", 0)] = 0
        in_order.read_back = slow_kafka
        in_order.take([_Event(_Msg(0, o, 1)) for o in (0, 1, 4, 5)])  # 2..3 missing
        await asyncio.sleep(0)
        assert list(in_order.fills) == [0]
        in_order.stop_fills()
        release.set()
        await asyncio.sleep(0.01)

    asyncio.run(scenario())
    assert applied == [0, 1] and in_order.fills == {}
    assert all(offset < 2 for _, offset in app.consumer.acks)
