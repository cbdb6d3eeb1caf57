"""The worker's Prometheus sensor exports exactly what Faust's own does."""

from __future__ import annotations

from types import SimpleNamespace

from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.types import TP
from prometheus_client import CollectorRegistry, generate_latest

from detector.stream.sensor import QuickPrometheusMonitor


class _Agent:
    def __str__(self) -> str:
        return "agent-detect"


class _Stream:
    """What the sensor reads of a Faust stream."""

    shortlabel = "Stream: Topic: session-events"
    task_owner = _Agent()

    def __str__(self) -> str:
        return self.shortlabel


def _exported(monitor_class: type[PrometheusMonitor]) -> list[str]:
    registry = CollectorRegistry()
    monitor = monitor_class(metrics=FaustMetrics.create(registry, "faust"))
    stream = _Stream()
    tps = [TP("session-events", 0), TP("session-events", 3), TP("other", 1)]

    def traffic(first: int) -> None:
        for i in range(first, first + 30):
            tp = tps[i % 3]
            monitor.track_tp_end_offset(tp, 1000 + i)
            monitor.on_message_in(tp, i, SimpleNamespace(time_in=None))  # type: ignore[arg-type]
            monitor.on_stream_event_in(tp, i, stream, None)  # type: ignore[arg-type]

    traffic(0)
    monitor._clear_partition_related_metrics()  # a rebalance: Faust removes the series
    traffic(100)
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if "_created" not in line]


def test_the_quick_sensor_exports_what_faust_exports() -> None:
    quick, faust = _exported(QuickPrometheusMonitor), _exported(PrometheusMonitor)
    assert quick == faust
    # The comparison covers the series the hooks write, after a clear as well.
    assert (
        'faust_messages_received_per_topics_partition{partition="3",topic="session-events"} 127.0'
        in quick
    )
    assert any(line.startswith("faust_total_events_per_stream") for line in quick)
