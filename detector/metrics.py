"""The Prometheus metrics of SPEC.md §7, defined once for replay and the worker.

The hot path only bumps plain ints and one bucket of a list; a custom collector
turns them into metric families when Prometheus scrapes. That is cheaper than
even pre-bound ``prometheus_client`` children (no lock, no method call per
increment) and reads the same numbers the end-of-run summary prints. Every
label value comes from a closed set (event types, reason codes, indicator
names, severities, ``user``/``guest``, store tables): never a user, an IP or a
fingerprint.

>>> from prometheus_client import generate_latest
>>> m = Metrics()
>>> m.count_event("login"); m.count_alert("ip_change", "high"); m.lag.observe(0.3)
>>> text = generate_latest(registry_with(m)).decode()
>>> 'sessionwatch_alerts_total{kind="ip_change",severity="high"} 1.0' in text
True
>>> 'sessionwatch_event_lag_seconds_bucket{le="0.5"} 1.0' in text
True
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Iterator
from typing import Final, get_args

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from detector.events import REASONS, EventType
from detector.store import Census

PREFIX: Final = "sessionwatch_"
EVENT_TYPES: Final = get_args(EventType)
SEVERITIES: Final = ("low", "medium", "high", "critical")

#: Processing time minus event time. Wide on purpose: a replayed log is hours or
#: days old, a healthy stream a fraction of a second.
LAG_BUCKETS: Final = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0,
)  # fmt: skip
#: Wall time to process one batch of events (a Faust ``take_events`` batch, or a
#: block of lines in replay).
PROCESSING_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip


class Histogram:
    """Bucket counts without a lock: one writer (the engine's thread), scrapes read."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        running = 0
        buckets: list[tuple[str, float]] = []
        for bound, n in zip((*map(str, self.bounds), "+Inf"), list(self.counts), strict=True):
            running += n
            buckets.append((bound, float(running)))
        return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=self.sum)


class Metrics(Collector):
    """Counters of one engine (replay or a worker), exported as SPEC.md §7 names."""

    def __init__(
        self,
        census: Callable[[], Census] | None = None,
        census_ttl_s: float = 5.0,
        before_collect: Callable[[], None] | None = None,
    ):
        self.events: dict[str, int] = dict.fromkeys(EVENT_TYPES, 0)
        self.invalid: dict[str, int] = dict.fromkeys(REASONS, 0)
        self.alerts: dict[tuple[str, str], int] = {}
        #: Vendor records of types with no meaning for sessions, by input format.
        self.unmapped: dict[str, int] = {}
        #: Worker only: holes in a partition's delivery and the records read back to
        #: fill them (see detector.stream.ordering); None in replay (not exported).
        self.delivery_holes: int | None = None
        self.records_read_back = 0
        #: Worker only: sessions forgotten to keep one key's state under Kafka's record
        #: size limit (detector.stream.bundle.MAX_BUNDLE_BYTES).
        self.sessions_shed = 0
        #: Worker only: per partition of session-events, records not applied yet.
        self.records_behind: Callable[[], dict[int, int]] | None = None
        #: Worker only: the partitions of session-events assigned here, and the topic's.
        self.partitions: Callable[[], tuple[int, int]] | None = None
        self.lag = Histogram(LAG_BUCKETS)
        self.processing = Histogram(PROCESSING_BUCKETS)
        self.census = census
        self._census_ttl_s = census_ttl_s
        self._census_cache: tuple[float, Census] | None = None
        self._census_lock = threading.Lock()
        self.before_collect = before_collect

    # -- hot path -----------------------------------------------------------------
    def count_event(self, kind: str) -> None:
        self.events[kind] += 1

    def count_invalid(self, reason: str) -> None:
        self.invalid[reason] = self.invalid.get(reason, 0) + 1

    def count_alert(self, kind: str, severity: str) -> None:
        key = (kind, severity)
        self.alerts[key] = self.alerts.get(key, 0) + 1

    # -- scrape -------------------------------------------------------------------
    def _current_census(self) -> Census | None:
        """The census, recomputed at most every ``census_ttl_s`` (replay's scans its state)."""
        if self.census is None:
            return None
        with self._census_lock:
            now = time.monotonic()
            cached = self._census_cache
            if cached is None or now - cached[0] >= self._census_ttl_s:
                cached = (now, self.census())
                self._census_cache = cached
            return cached[1]

    def collect(self) -> Iterator[Metric]:
        if self.before_collect is not None:
            self.before_collect()
        events = CounterMetricFamily(
            PREFIX + "events", "Valid events processed, by type.", labels=["type"]
        )
        for kind, n in dict(self.events).items():
            events.add_metric([kind], n)
        yield events
        invalid = CounterMetricFamily(
            PREFIX + "invalid_events",
            "Records refused and dead-lettered, by reason.",
            labels=["reason"],
        )
        for reason, n in dict(self.invalid).items():
            invalid.add_metric([reason], n)
        yield invalid
        alerts = CounterMetricFamily(
            PREFIX + "alerts",
            "Alerts raised, by indicator and severity.",
            labels=["kind", "severity"],
        )
        for (kind, severity), n in sorted(dict(self.alerts).items()):
            alerts.add_metric([kind, severity], n)
        yield alerts
        if self.unmapped:
            unmapped = CounterMetricFamily(
                PREFIX + "unmapped_records",
                "Vendor records skipped: their type means nothing for sessions.",
                labels=["format"],
            )
            for fmt, n in sorted(dict(self.unmapped).items()):
                unmapped.add_metric([fmt], n)
            yield unmapped
        if self.delivery_holes is not None:
            yield CounterMetricFamily(
                PREFIX + "delivery_holes",
                "Offsets of session-events the stream framework did not deliver in order,"
                " each then read back from Kafka and applied.",
                value=self.delivery_holes,
            )
            yield CounterMetricFamily(
                PREFIX + "records_read_back",
                "Records read back from Kafka to fill delivery holes.",
                value=self.records_read_back,
            )
            yield CounterMetricFamily(
                PREFIX + "sessions_shed",
                "Sessions forgotten to keep one user's state under Kafka's record size limit.",
                value=self.sessions_shed,
            )
        if self.records_behind is not None:
            behind = GaugeMetricFamily(
                PREFIX + "records_behind",
                "Records of session-events up to the end offset last seen that this"
                " worker has not applied yet, by assigned partition.",
                labels=["partition"],
            )
            for partition, n in sorted(self.records_behind().items()):
                behind.add_metric([str(partition)], n)
            yield behind
        if self.partitions is not None:
            assigned, topic = self.partitions()
            yield GaugeMetricFamily(
                PREFIX + "partitions_assigned",
                "Partitions of session-events assigned to this worker: a partition no"
                " worker holds has nothing detected on it.",
                value=assigned,
            )
            yield GaugeMetricFamily(
                PREFIX + "input_partitions",
                "Partitions of session-events (every worker reports the same).",
                value=topic,
            )
        yield self.lag.family(
            PREFIX + "event_lag_seconds", "Processing time minus event time, per event."
        )
        yield self.processing.family(
            PREFIX + "processing_seconds", "Wall time to process one batch of events."
        )
        census = self._current_census()
        if census is not None:
            active = GaugeMetricFamily(
                PREFIX + "active_sessions",
                "Sessions live at the current event time (not ended, within timeouts).",
                labels=["kind"],
            )
            active.add_metric(["user"], census.user_sessions)
            active.add_metric(["guest"], census.guest_sessions)
            yield active
            entries = GaugeMetricFamily(
                PREFIX + "state_entries", "Entries kept in state, by table.", labels=["table"]
            )
            for table, n in sorted(census.entries.items()):
                entries.add_metric([table], n)
            yield entries


def registry_with(metrics: Metrics) -> CollectorRegistry:
    """A registry of its own, so that two apps in one process never register twice."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    return registry


def serve(metrics: Metrics, port: int, host: str = "127.0.0.1") -> CollectorRegistry:
    """Serves ``/metrics`` from a background thread (replay); returns the registry."""
    registry = registry_with(metrics)
    start_http_server(port, addr=host, registry=registry)
    return registry
