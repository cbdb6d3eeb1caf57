"""The worker's per-partition ordering gate: in order, re-deliveries, holes, resets."""

from __future__ import annotations

import asyncio
from typing import cast

from detector.stream.ordering import Hole, OffsetGate, Verdict


def test_in_order_events_are_applied_and_re_deliveries_pass_to_the_bundles() -> None:
    gate = OffsetGate()
    assert [gate.admit(0, o, o, None) for o in (5, 6, 7)] == [Verdict.APPLY] * 3
    # Re-delivered after a crash or a read-back: applied again, the bundle's offset
    # decides that nothing changes; the expected offset does not move back.
    assert gate.admit(0, 6, 6, None) is Verdict.APPLY
    assert gate.admit(0, 8, 8, None) is Verdict.APPLY
    assert gate.holes_found == 0 and gate.held == 0


def test_a_missing_offset_holds_the_partition_until_filled() -> None:
    gate = OffsetGate()
    assert gate.admit(2, 47, "e47", None) is Verdict.APPLY
    assert gate.admit(2, 49, "e49", None) is Verdict.FILL
    assert gate.hole(2) == Hole(2, 48, 49)
    # Later events of that partition wait; other partitions go on.
    assert gate.admit(2, 50, "e50", None) is Verdict.HOLD
    assert gate.admit(3, 10, "f10", None) is Verdict.APPLY
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


def test_a_second_hole_among_held_events_holds_the_rest_again() -> None:
    gate = OffsetGate()
    gate.admit(0, 1, 1, None)
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
    gate.admit(0, 1, 1, None)
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
        self.tp = ("events", partition)
        self.generation_id = generation
        self.acked = False


class _Event:
    def __init__(self, msg: _Msg) -> None:
        self.message, self.value = msg, b"{}"


class _Consumer:
    def __init__(self) -> None:
        self._committed_offset: dict[object, int] = {}


class _App:
    """What InOrder reads of a Faust app around a rebalance."""

    def __init__(self) -> None:
        self.consumer_generation_id = 1
        self.rebalancing_count = 1  # the revocation before the first assignment
        self.consumer = _Consumer()


def test_a_batch_taken_between_revocation_and_assignment_is_neither_applied_nor_acked() -> None:
    """Faust moves ``consumer_generation_id`` only at the assignment, so between a
    revocation (which counts a rebalance) and then, a batch looks current while its
    partitions may already be restoring on another worker: applying it would race that
    worker's changelog writes. It is dropped unacked, like a batch of an older generation."""
    from detector.metrics import Metrics
    from detector.stream.app import InOrder
    from detector.stream.settings import StreamSettings

    applied: list[int] = []
    app = _App()
    in_order = InOrder(
        app,  # type: ignore[arg-type]
        StreamSettings(),
        Metrics(),
        lambda raw, msg, token: applied.append(msg.offset),
        lambda: None,
    )
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
