"""What the worker does with one record of ``session-events``, apart from Kafka.

Kept out of the Faust app so that tests run the worker's own per-record code over a
plain mapping, with and without the compiled path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

from detector.alerts import Alert
from detector.alerts import decode as decode_alert
from detector.alerts import encode as encode_alert
from detector.engine import Engine
from detector.events import Event, InvalidEvent, decode
from detector.fastpath import APPLIED, LOADED, BundlePath, add_counts
from detector.metrics import Metrics
from detector.stream.bundle import BundleStore
from detector.stream.routing import routing_key

#: The alerts of an event that raised none (never changed: ``BundleStore.applied`` keeps
#: only non-empty lists).
NO_ALERTS: tuple[bytes, ...] = ()


class Applier(NamedTuple):
    """``apply(raw, msg, token)``: one record (``msg`` has its topic, partition and
    offset; ``token`` is handed back with its state's write: the worker's is the
    partition).
    ``fold()``: adds what the compiled path counted to the metrics (at checkpoints and
    scrapes)."""

    apply: Callable[[bytes, Any, Any], None]
    fold: Callable[[], None]


def record_applier(
    engine: Engine,
    store: BundleStore,
    metrics: Metrics,
    publish: Callable[[Alert, bytes], None],
    refuse: Callable[[InvalidEvent, bytes, Any], None],
    failed: Callable[[Exception, bytes, Any], None],
    native: BundlePath | None,
) -> Applier:
    """The worker's per-record step over ``engine`` and its ``store``: ``publish`` sends an
    alert (new or re-sent), ``refuse`` dead-letters an invalid record, ``failed`` one the
    engine raised on. ``native``: the compiled path (:func:`detector.fastpath.bundle_path`)
    for routine transactions and plain logins, or None."""
    fingerprint = engine.fingerprint
    native_line = native.bundle_line if native is not None else None
    if native is not None:
        # Its changes to a bundle's sessions wait in its copies until the store asks.
        store.write_back = native.flush_bundle
    load_failed: list[Exception] = []
    load = store.load

    def load_for_native(key: str, ts: float, msg: Any, token: Any) -> Any:
        """The compiled path's loader: the record's bundle, None if applied before (its
        offset is not past the bundle's: ``BundleStore.already_applied``)."""
        try:
            bundle = load(key, msg.partition, token, ts)
        except Exception as exc:
            load_failed.append(exc)
            raise
        return None if msg.offset <= bundle.offset else bundle

    def apply(raw: bytes, msg: Any, token: Any) -> None:
        loaded = False
        if native_line is not None:
            try:
                took = native_line(raw, load_for_native, msg, token, time.time())
            except Exception as exc:  # a bug must not stop the worker or lose the event
                if load_failed:  # the state's, not the record's: as on the Python path
                    load_failed.clear()
                    raise
                failed(exc, raw, msg)
                return
            if took == APPLIED:
                store.applied(msg.offset, NO_ALERTS)
                store.save()
                return
            loaded = took == LOADED
        ev = decode(raw)
        if type(ev) is not Event:
            assert isinstance(ev, InvalidEvent)
            refuse(ev, raw, msg)
            metrics.count_invalid(ev.reason)
            return
        if not loaded:
            bundle = store.load(routing_key(ev, fingerprint), msg.partition, token, ev.epoch)
            store.write_back(bundle.sessions)  # the compiled path's, before the engine's
        earlier = store.already_applied(msg.offset)
        if earlier is not None:
            # Re-delivered after a crash: not applied twice, its alerts sent again.
            for value in earlier:
                publish(decode_alert(value), value)
            return
        try:
            new = engine.process(ev, raw)
        except Exception as exc:  # a bug must not stop the worker or lose the event
            failed(exc, raw, msg)
            return
        metrics.count_event(ev.type)
        metrics.lag.observe(time.time() - ev.epoch)
        encoded = tuple(encode_alert(a) for a in new) if new else NO_ALERTS  # most have none
        store.applied(msg.offset, encoded)
        store.save()
        if not new:
            return
        for alert, value in zip(new, encoded, strict=True):
            metrics.count_alert(alert.kind, alert.severity)  # re-sends are not counted
            publish(alert, value)

    def fold() -> None:
        if native is not None:
            add_counts(native, metrics)

    return Applier(apply, fold)
