"""Alerts and actions handed to the Kafka client's producer in the step that raises them.

Faust's ``send_soon`` puts each message into its producer buffer, whose task hands it to
the Kafka client later: per message a future, a pending message, a sensor dict, a
producer look-up and a task step, then the client's ``send``. While catching up that was
about a fifth of the worker's main thread for one event in a hundred. The outbox calls
the client's ``send`` directly instead, stepping the coroutine inline: a send that does
not wait (the topic's metadata known, room in the partition's batch) completes within
the call, without a trip through the event loop. One that waits is finished by a task,
and every later message queues behind it, so the order of a partition's messages is the
order they were raised in.

Before a commit, Faust flushes its producer: :meth:`Outbox.drain` waits until every
message sent before it is with the client, whose own flush then waits for delivery. A
message the client fails to hand over or deliver stops the worker, as a lost state write
does, and no commit passes after it: its event is read again on restart and raises the
same alert (same ``alert_id``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

log = logging.getLogger(__name__)


class Resumed:
    """Awaitable that goes on with a coroutine already stepped once (it yielded ``first``)."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Any, first: Any) -> None:
        self.coro, self.first = coro, first

    def __await__(self) -> Any:
        coro, value = self.coro, self.first
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation included: hand it on
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


class OutboxFailed(RuntimeError):
    """A message could not be handed to the Kafka client or was not delivered."""


class Outbox:
    """Messages for the Kafka client's producer (``producer()``), sent inline.

    ``monitor``: Faust's monitor, told of each send as Faust's own path tells it (the
    per-topic count of messages sent, send latency and errors). ``on_failure``: what
    stops the worker (``app.crash``)."""

    def __init__(
        self,
        producer: Callable[[], Any],
        monitor: Any,
        on_failure: Callable[[BaseException], Awaitable[None]],
    ) -> None:
        self._producer = producer
        self._monitor = monitor
        self._on_failure = on_failure
        self._waiting: deque[tuple[str, bytes | None, bytes]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._stopping: asyncio.Future[None] | None = None
        self._progress = asyncio.Event()
        self.queued = 0  # messages sent to the outbox
        self.handed = 0  # of them, with the client
        self.failed: BaseException | None = None

    @property
    def backlog(self) -> int:
        """Messages not yet with the client."""
        return self.queued - self.handed

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Hands a message to the client now, or behind those still waiting."""
        self.queued += 1
        if self.failed is not None:
            return  # the worker is stopping; its events are read again on restart
        if self._task is not None:
            self._waiting.append((topic, key, value))
            return
        producer, state = self._initiated(topic, key, value)
        coro = producer.send(topic, value, key=key)
        try:
            first = coro.send(None)
        except StopIteration as stop:
            self._handed(stop.value, producer, state, topic)
            return
        except Exception as exc:
            self._fail(exc, topic)
            return
        self._task = asyncio.ensure_future(
            self._finish(Resumed(coro, first), producer, state, topic)
        )

    async def _finish(self, first: Any, producer: Any, state: Any, topic: str) -> None:
        """The send that waited, then every message that queued behind it, in order."""
        try:
            self._handed(await first, producer, state, topic)
            while self._waiting and self.failed is None:
                topic, key, value = self._waiting.popleft()
                producer, state = self._initiated(topic, key, value)
                self._handed(await producer.send(topic, value, key=key), producer, state, topic)
        except Exception as exc:
            self._fail(exc, topic)
        except asyncio.CancelledError as exc:  # the worker stopping: nothing passes them
            self._fail(exc, topic, stop=False)
            raise
        finally:
            self._task = None
            self._progress.set()

    def _initiated(self, topic: str, key: bytes | None, value: bytes) -> tuple[Any, Any]:
        """The producer, and the monitor's state for a send (as Faust's path tells it)."""
        producer = self._producer()
        keysize = len(key) if key is not None else 0
        return producer, self._monitor.on_send_initiated(producer, topic, None, keysize, len(value))

    def _handed(self, delivery: asyncio.Future[Any], producer: Any, state: Any, topic: str) -> None:
        self.handed += 1
        self._progress.set()
        delivery.add_done_callback(partial(self._delivered, producer, state, topic))

    def _delivered(
        self, producer: Any, state: Any, topic: str, delivery: asyncio.Future[Any]
    ) -> None:
        if delivery.cancelled():
            exc: BaseException = asyncio.CancelledError("delivery cancelled")
        elif (error := delivery.exception()) is not None:
            exc = error
        else:
            self._monitor.on_send_completed(producer, state, delivery.result())
            return
        self._monitor.on_send_error(producer, exc, state)
        self._fail(exc, topic)

    def _fail(self, exc: BaseException, topic: str, stop: bool = True) -> None:
        if self.failed is not None:
            return
        self.failed = exc
        self._waiting.clear()
        self._progress.set()
        if stop:
            log.error("message to %s not delivered (%r): the worker stops", topic, exc)
            self._stopping = asyncio.ensure_future(self._on_failure(exc))

    def check(self) -> None:
        """Raises if a message failed: no commit may pass its event."""
        if self.failed is not None:
            raise OutboxFailed(f"a message was not delivered: {self.failed!r}") from self.failed

    async def drain(self, within: float = 60.0) -> None:
        """Waits until every message sent before the call is with the client; raises
        (so no commit follows) if one failed or they are not all handed over ``within``
        seconds (as the producer buffer's drain does: Faust retries the commit)."""
        target = self.queued
        deadline = time.monotonic() + within
        while self.handed < target and self.failed is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise OutboxFailed(
                    f"{target - self.handed} messages not handed over in {within:g} s"
                )
            self._progress.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._progress.wait(), timeout=min(1.0, left))
        self.check()
