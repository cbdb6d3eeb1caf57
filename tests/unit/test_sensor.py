"""The worker's Prometheus sensor exports exactly what Faust's own does."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

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
    tables = [SimpleNamespace(name="state"), SimpleNamespace(name="other")]

    def traffic(first: int) -> None:
        for i in range(first, first + 30):
            tp = tps[i % 3]
            monitor.track_tp_end_offset(tp, 1000 + i)
            monitor.on_message_in(tp, i, SimpleNamespace(time_in=None))  # type: ignore[arg-type]
            monitor.on_stream_event_in(tp, i, stream, None)  # type: ignore[arg-type]
            table = tables[i % 2]
            monitor.on_table_get(table, b"k")  # type: ignore[arg-type]
            if i % 3:
                monitor.on_table_set(table, b"k", b"v")  # type: ignore[arg-type]
            if i % 5 == 0:
                monitor.on_table_del(table, b"k")  # type: ignore[arg-type]
            if i % 4 == 0:  # an alert or a dead letter sent
                monitor.on_send_initiated(None, tp.topic, None, 4, 700)  # type: ignore[arg-type]

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
    assert (
        'faust_table_operations_total{operation="keys_updated",table="table.state"} 20.0' in quick
    )
    assert any(line.startswith('faust_topic_messages_sent_total{topic="topic.') for line in quick)


def test_records_counted_at_once_export_what_one_at_a_time_does() -> None:
    """Records taken from the fetch directly are counted per partition at once
    (``on_messages_in``): the same received counters and read offsets as Faust's hook
    called once per record; only the in-flight gauge, which nothing would count down
    for them, is left alone."""

    def exported(at_once: bool) -> tuple[list[str], Any]:
        registry = CollectorRegistry()
        monitor = QuickPrometheusMonitor(metrics=FaustMetrics.create(registry, "faust"))
        for tp, offsets in ((TP("session-events", 0), range(5, 45)), (TP("other", 2), range(3))):
            if at_once:
                monitor.on_messages_in(tp, len(offsets), offsets[-1])
            else:
                for offset in offsets:
                    monitor.on_message_in(tp, offset, SimpleNamespace(time_in=None))
        lines = generate_latest(registry).decode().splitlines()
        kept = [line for line in lines if "_created" not in line and "active_messages" not in line]
        state = (
            monitor.messages_received_total,
            dict(monitor.messages_received_by_topic),
            dict(monitor.tp_read_offsets),
        )
        return kept, state

    assert exported(at_once=True) == exported(at_once=False)
    lines, (total, _, read) = exported(at_once=True)
    assert total == 43 and read[TP("session-events", 0)] == 44
    assert 'faust_messages_received_per_topic_total{topic="session-events"} 40.0' in lines


def test_table_operations_counted_at_once_export_what_one_at_a_time_does() -> None:
    """The state's reads and writes are told to the sensor once per checkpoint
    (``on_table_ops``): the same counters and series as one hook call per operation."""

    def exported(at_once: bool) -> tuple[list[str], list[tuple[int, int, int]]]:
        registry = CollectorRegistry()
        monitor = QuickPrometheusMonitor(metrics=FaustMetrics.create(registry, "faust"))
        tables = [SimpleNamespace(name="state"), SimpleNamespace(name="other")]
        for table, (gets, sets, dels) in zip(tables, ((7, 5, 2), (3, 0, 1)), strict=True):
            if at_once:
                monitor.on_table_ops(table, gets, sets, dels)
                continue
            for _ in range(gets):
                monitor.on_table_get(table, b"k")
            for _ in range(sets):
                monitor.on_table_set(table, b"k", b"v")
            for _ in range(dels):
                monitor.on_table_del(table, b"k")
        lines = generate_latest(registry).decode().splitlines()
        kept = [line for line in lines if "_created" not in line]
        states = [
            (s.keys_retrieved, s.keys_updated, s.keys_deleted) for s in monitor.tables.values()
        ]
        return kept, states

    assert exported(at_once=True) == exported(at_once=False)
    lines, states = exported(at_once=True)
    assert states == [(7, 5, 2), (3, 0, 1)]
    retrieved = 'faust_table_operations_total{operation="keys_retrieved",table="table.state"} 7.0'
    assert retrieved in lines
    assert not any('operation="keys_updated",table="table.other"' in line for line in lines)
