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
#: What a record without a value (a Kafka tombstone) is: refused, as not JSON.
NO_VALUE = InvalidEvent("not_json", "the record has no value (null)")


class Applier(NamedTuple):
    """``apply(raw, msg, token)``: one record (``msg`` has its topic, partition and
    offset; ``token`` is handed back with its state's write: the worker's is the
    partition).
    ``fold()``: adds what the compiled path counted to the metrics (at checkpoints and
    scrapes).
    ``apply_run(records, token)``: ``apply(record.value, record, token)`` on each of a run
    of Kafka client records of one partition, in offset order (the compiled path takes
    them in one call, and hands back only those that are the Python path's)."""

    apply: Callable[[bytes | None, Any, Any], None]
    fold: Callable[[], None]
    apply_run: Callable[[list[Any], Any], None]


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
    native_run = native.bundle_run if native is not None else None
    if native is not None:
        # Its changes to a bundle's sessions wait in its copies until the store asks.
        store.write_back = native.flush_bundle
    load_failed: list[Exception] = []
    load, changing = store.load, store.changing
    run_view, terms = store.run_view, engine.expiry_terms()

    def load_for_native(key: str, ts: float, msg: Any, token: Any) -> Any:
        """The compiled path's loader: the record's bundle, None if applied before (its
        offset is not past the bundle's: ``BundleStore.already_applied``)."""
        try:
            bundle = load(key, msg.partition, token, ts)
        except Exception as exc:
            load_failed.append(exc)
            raise
        offset = msg.offset
        if offset <= bundle.offset:
            return None
        changing(offset)  # a run applies it without a save
        return bundle

    def apply(raw: bytes | None, msg: Any, token: Any) -> None:
        loaded = False
        if native_line is not None and raw is not None:
            try:
                took = native_line(raw, load_for_native, msg, token, time.time())
            except Exception as exc:  # a bug must not stop the worker or lose the event
                if load_failed:  # the state's, not the record's: as on the Python path
                    load_failed.clear()
                    raise
                failed(exc, raw, msg)
                return
            if took == APPLIED:  # its loader marked the bundle changed, as in a run
                store.current.offset = msg.offset
                return
            loaded = took == LOADED
        python_path(raw, msg, token, loaded)

    def apply_run(records: list[Any], token: Any) -> None:
        if native_run is None:
            for record in records:
                apply(record.value, record, token)
            return
        i, n = 0, len(records)
        while i < n:
            begun = i
            try:
                view = (run_view(), terms)  # most records' bundles: loaded without a call
                i, took = native_run(records, i, load_for_native, token, time.time(), view)
            except Exception:
                if load_failed:  # the state's, not a record's: as on the Python path
                    load_failed.clear()
                    raise
                # A bug at one record: the run again one record at a time from where
                # this call began (records it applied have their bundle's offset: each
                # is found applied before, and is not applied twice).
                for record in records[begun:]:
                    apply(record.value, record, token)
                return
            if i < n:
                record = records[i]
                python_path(record.value, record, token, took == LOADED)
                i += 1

    def python_path(raw: bytes | None, msg: Any, token: Any, loaded: bool) -> None:
        """The rest of :func:`apply` on the Python path, after the compiled path handed
        the record back (``loaded``: after it had the store load the bundle)."""
        if raw is None:
            refuse(NO_VALUE, b"", msg)
            metrics.count_invalid(NO_VALUE.reason)
            return
        ev = decode(raw, time.time())
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

    return Applier(apply, fold, apply_run)
