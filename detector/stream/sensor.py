"""Faust's Prometheus sensor, with its per-message series looked up once.

Faust calls three sensor hooks for every message (message in, stream event in, end
offset) and one for every table read or write, and its Prometheus sensor looks up each
labelled series anew every time
(``labels()``, and a regex over the stream's name): about a tenth of a worker's time
while catching up, once state writes had stopped dominating. The series are the same
for every message of a partition or stream, so they are kept, and forgotten whenever
Faust clears its partition metrics (at each rebalance), exactly when it removes them.
What is exported is unchanged (``tests/unit/test_sensor.py`` compares the two).
"""

from __future__ import annotations

import weakref
from typing import Any

from faust.sensors.monitor import Monitor
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.types import TP


class QuickPrometheusMonitor(PrometheusMonitor):
    """:class:`PrometheusMonitor` with the per-message series kept per partition/stream."""

    def __init__(self, metrics: FaustMetrics, **kwargs: Any) -> None:
        super().__init__(metrics, **kwargs)
        self._tp_series: dict[TP, tuple[Any, Any, Any]] = {}
        self._stream_series: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        self._table_ops: dict[tuple[str, str], Any] = {}
        self._sent: dict[str, Any] = {}

    def _series(self, tp: TP) -> tuple[Any, Any, Any]:
        series = self._tp_series.get(tp)
        if series is None:
            m = self._metrics
            series = self._tp_series[tp] = (
                m.messages_received_per_topics.labels(topic=tp.topic),
                m.messages_received_per_topics_partition.labels(
                    topic=tp.topic, partition=tp.partition
                ),
                m.topic_partition_end_offset.labels(topic=tp.topic, partition=tp.partition),
            )
        return series

    def on_message_in(self, tp: TP, offset: int, message: Any) -> None:
        Monitor.on_message_in(self, tp, offset, message)
        m = self._metrics
        m.messages_received.inc()
        m.active_messages.inc()
        per_topic, per_partition, _ = self._series(tp)
        per_topic.inc()
        per_partition.set(offset)

    def on_messages_in(self, tp: TP, n: int, last_offset: int) -> None:
        """``on_message_in`` for ``n`` records of ``tp`` at once, up to ``last_offset``:
        the records the worker takes from the fetch directly, which no stream sees. The
        in-flight gauges (``faust_active_messages``) are left alone: nothing would
        count these records out."""
        self.messages_received_total += n
        self.messages_received_by_topic[tp.topic] += n
        self.tp_read_offsets[tp] = last_offset
        self._metrics.messages_received.inc(n)
        per_topic, per_partition, _ = self._series(tp)
        per_topic.inc(n)
        per_partition.set(last_offset)

    def on_stream_event_in(self, tp: TP, offset: int, stream: Any, event: Any) -> Any:
        state = Monitor.on_stream_event_in(self, tp, offset, stream, event)
        m = self._metrics
        m.total_events.inc()
        m.total_active_events.inc()
        series = self._stream_series.get(stream)
        if series is None:
            label = f"stream.{self._stream_label(stream)}.events"
            series = self._stream_series[stream] = m.total_events_per_stream.labels(stream=label)
        series.inc()
        return state

    def track_tp_end_offset(self, tp: TP, offset: int) -> None:
        # Faust calls this for every record it fetches, with the same end offset for a
        # whole fetch; a gauge's set takes a lock.
        if self.tp_end_offsets.get(tp) != offset or tp not in self._tp_series:
            Monitor.track_tp_end_offset(self, tp, offset)
            self._series(tp)[2].set(offset)

    def _table_series(self, table: Any, operation: str) -> Any:
        series = self._table_ops.get((table.name, operation))
        if series is None:
            series = self._table_ops[table.name, operation] = self._metrics.table_operations.labels(
                table=f"table.{table.name}", operation=operation
            )
        return series

    def on_table_ops(self, table: Any, retrieved: int, updated: int, deleted: int) -> None:
        """``on_table_get``, ``on_table_set`` and ``on_table_del`` for many operations at
        once: the worker's state reads and writes, counted once per checkpoint (a lock
        and two look-ups per operation were 2 % of its time catching up)."""
        state = self._table_or_create(table)
        state.keys_retrieved += retrieved
        state.keys_updated += updated
        state.keys_deleted += deleted
        for n, operation in (
            (retrieved, self.KEYS_RETRIEVED),
            (updated, self.KEYS_UPDATED),
            (deleted, self.KEYS_DELETED),
        ):
            if n:
                self._table_series(table, operation).inc(n)

    def on_table_get(self, table: Any, key: Any) -> None:
        Monitor.on_table_get(self, table, key)
        self._table_series(table, self.KEYS_RETRIEVED).inc()

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        Monitor.on_table_set(self, table, key, value)
        self._table_series(table, self.KEYS_UPDATED).inc()

    def on_table_del(self, table: Any, key: Any) -> None:
        Monitor.on_table_del(self, table, key)
        self._table_series(table, self.KEYS_DELETED).inc()

    def on_send_initiated(
        self, producer: Any, topic: str, message: Any, keysize: int, valsize: int
    ) -> Any:
        # Per alert sent (and dead letter): the labelled series looked up once per topic.
        sent = self._sent.get(topic)
        if sent is None:
            sent = self._sent[topic] = self._metrics.topic_messages_sent.labels(
                topic=f"topic.{topic}"
            )
        sent.inc()
        return Monitor.on_send_initiated(self, producer, topic, message, keysize, valsize)

    def _clear_partition_related_metrics(self) -> None:
        super()._clear_partition_related_metrics()
        self._tp_series.clear()
        self._stream_series.clear()
        self._table_ops.clear()
        self._sent.clear()


def install(app: Any) -> None:
    """Swaps the monitor ``setup_prometheus_sensors`` gave ``app`` for the quick one, on
    the same metrics (so the same registry and /metrics page)."""
    app.monitor = QuickPrometheusMonitor(metrics=app.monitor._metrics)
