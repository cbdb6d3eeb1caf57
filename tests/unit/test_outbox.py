"""The outbox's order, hand-over and failure rules, with a producer whose sends the test
holds and delivers (what a live broker cannot be made to do on cue: a send that waits
for metadata, a delivery that fails). Delivery by a real broker is in the integration
tests (every alert of the simulated day, in its key's partition)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from detector.stream.outbox import Outbox, OutboxFailed


class Producer:
    """The Kafka client's ``send``: hands over at once, or waits while ``held`` is clear;
    each hand-over returns a delivery future the test settles."""

    def __init__(self) -> None:
        self.held = asyncio.Event()
        self.held.set()
        self.holds = 1 << 30  # while held: how many of the next sends wait
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.deliveries: list[asyncio.Future[Any]] = []

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> Any:
        if not self.held.is_set() and self.holds > 0:
            self.holds -= 1
            await self.held.wait()
        self.sent.append((topic, key, value))
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.deliveries.append(delivery)
        return delivery


class Monitor:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def on_send_initiated(self, producer: Any, topic: str, message: Any, ks: int, vs: int) -> Any:
        self.calls.append(f"initiated {topic} {ks} {vs}")
        return len(self.calls)

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        self.calls.append(f"completed {state} {metadata}")

    def on_send_error(self, producer: Any, exc: BaseException, state: Any) -> None:
        self.calls.append(f"error {state} {exc!r}")


async def settle() -> None:
    """Lets callbacks and the tasks they start run."""
    for _ in range(5):
        await asyncio.sleep(0)


def outbox() -> tuple[Outbox, Producer, Monitor, list[BaseException]]:
    producer, monitor, stopped = Producer(), Monitor(), []

    async def stop(exc: BaseException) -> None:
        stopped.append(exc)

    return Outbox(lambda: producer, monitor, stop), producer, monitor, stopped


def test_a_send_that_does_not_wait_is_with_the_client_on_return() -> None:
    async def run() -> None:
        box, producer, monitor, _ = outbox()
        box.send("alerts", b"k1", b"v1")
        assert producer.sent == [("alerts", b"k1", b"v1")]  # no await in between
        assert (box.queued, box.handed, box.backlog) == (1, 1, 0)
        producer.deliveries[0].set_result("meta")
        await asyncio.sleep(0)
        assert monitor.calls == ["initiated alerts 2 2", "completed 1 meta"]
        await box.drain()

    asyncio.run(run())


def test_messages_behind_a_send_that_waits_keep_their_order() -> None:
    async def run() -> None:
        box, producer, _, _ = outbox()
        producer.held.clear()  # the first send waits (say, for the topic's metadata)
        producer.holds = 1  # the others would not
        for i in range(5):
            box.send("alerts", f"k{i}".encode(), f"v{i}".encode())
        await asyncio.sleep(0)
        assert producer.sent == [] and box.backlog == 5
        drained = asyncio.ensure_future(box.drain())
        await asyncio.sleep(0)
        assert not drained.done()
        producer.held.set()
        await asyncio.wait_for(drained, 1)
        assert [k for _, k, _ in producer.sent] == [f"k{i}".encode() for i in range(5)]
        box.send("actions", None, b"after")  # nothing waits now: inline again
        assert producer.sent[-1] == ("actions", None, b"after") and box.backlog == 0

    asyncio.run(run())


def test_drain_waits_only_for_messages_sent_before_it() -> None:
    async def run() -> None:
        box, producer, _, _ = outbox()
        producer.held.clear()
        box.send("alerts", b"a", b"1")
        drained = asyncio.ensure_future(box.drain())
        await asyncio.sleep(0)
        box.send("alerts", b"b", b"2")  # after the drain began
        producer.held.set()
        await asyncio.wait_for(drained, 1)
        assert box.handed >= 1

    asyncio.run(run())


def test_a_failed_delivery_stops_the_worker_and_no_commit_passes_it() -> None:
    async def run() -> None:
        box, producer, monitor, stopped = outbox()
        box.send("alerts", b"k", b"v")
        box.check()
        refused = RuntimeError("broker refused")
        producer.deliveries[0].set_exception(refused)
        await settle()
        assert stopped == [refused]
        assert monitor.calls[-1] == f"error 1 {refused!r}"
        with pytest.raises(OutboxFailed):
            box.check()
        with pytest.raises(OutboxFailed):
            await box.drain()
        box.send("alerts", b"k2", b"v2")  # stopping: not sent, its event is read again
        assert len(producer.sent) == 1

    asyncio.run(run())


def test_a_send_that_raises_stops_the_worker_without_raising_into_the_engine() -> None:
    async def run() -> None:
        box, producer, _, stopped = outbox()

        async def closed(topic: str, value: bytes, key: bytes | None = None) -> Any:
            raise RuntimeError("producer closed")

        producer.send = closed  # type: ignore[method-assign]
        box.send("alerts", b"k", b"v")  # does not raise
        await settle()
        assert [str(e) for e in stopped] == ["producer closed"]
        with pytest.raises(OutboxFailed):
            await box.drain()

    asyncio.run(run())


def test_a_wait_cancelled_by_a_stop_lets_no_commit_pass_the_messages_behind_it() -> None:
    async def run() -> None:
        box, producer, _, stopped = outbox()
        producer.held.clear()
        box.send("alerts", b"a", b"1")
        box.send("alerts", b"b", b"2")
        await asyncio.sleep(0)
        assert box._task is not None
        box._task.cancel()  # the worker stopping
        await asyncio.sleep(0)
        assert producer.sent == [] and stopped == []  # already stopping: no second stop
        with pytest.raises(OutboxFailed):
            await asyncio.wait_for(box.drain(), 1)

    asyncio.run(run())


def test_a_hand_over_that_never_ends_lets_no_commit_pass() -> None:
    async def run() -> None:
        box, producer, _, stopped = outbox()
        producer.held.clear()  # the broker never answers
        box.send("alerts", b"a", b"1")
        with pytest.raises(OutboxFailed, match="1 messages not handed over"):
            await box.drain(within=0.05)
        assert stopped == []  # Faust retries the commit; the client's own timeout fails it

    asyncio.run(run())
