"""Generates the Grafana SOC dashboard (``dashboards/sessionwatch.json``) from code.

Panels are declared once below, as data; the JSON is rendered deterministically
and committed, so Grafana provisioning needs no build step. The test suite checks
that the committed file is current, that every query parses (promtool) and that
it returns data from a real Prometheus scraping a real worker.

    python deploy/grafana/make_dashboard.py          # rewrite the JSON
    python deploy/grafana/make_dashboard.py --check  # exit 1 if the JSON is stale
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards" / "sessionwatch.json"
LAYOUT = HERE / "sessionwatch-layout.svg"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"  # timeseries | stat | bargauge
    unit: str = "short"
    width: int = 12
    height: int = 8
    overrides: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


RATE = "$__rate_interval"

ROWS: tuple[Row, ...] = (
    Row(
        "Detections",
        (
            Panel(
                "Alerts per minute by kind and severity",
                "Alerts raised per minute, one line per indicator and severity.",
                (
                    Query(
                        f"sum by (kind, severity) (rate(sessionwatch_alerts_total[{RATE}])) * 60",
                        "{{kind}} ({{severity}})",
                    ),
                ),
                unit="short",
                width=16,
            ),
            Panel(
                "Critical alerts, last hour",
                "Session reuse after logout, termination or rotation, and activity of "
                "locked-out or deactivated users: each one is worth a look.",
                (Query('sum(increase(sessionwatch_alerts_total{severity="critical"}[1h]))'),),
                kind="stat",
                width=8,
            ),
            Panel(
                "Top indicators (time range)",
                "Which indicators fired most over the selected range.",
                (
                    Query(
                        "topk(10, sum by (kind) (increase(sessionwatch_alerts_total[$__range])))",
                        "{{kind}}",
                        instant=True,
                    ),
                ),
                kind="bargauge",
                width=12,
            ),
            Panel(
                "Active sessions",
                "Sessions live at the workers' current event time (not ended, within "
                "their timeouts), users and guests apart.",
                (Query("sum by (kind) (sessionwatch_active_sessions)", "{{kind}}"),),
                width=12,
            ),
        ),
    ),
    Row(
        "Input",
        (
            Panel(
                "Throughput (events/s)",
                "Valid events processed per second, by event type.",
                (Query(f"sum by (type) (rate(sessionwatch_events_total[{RATE}]))", "{{type}}"),),
                unit="ops",
                width=8,
            ),
            Panel(
                "Invalid events by reason (per minute)",
                "Records refused and dead-lettered to session-events-dlq, by reason.",
                (
                    Query(
                        f"sum by (reason) (rate(sessionwatch_invalid_events_total[{RATE}])) * 60",
                        "{{reason}}",
                    ),
                ),
                width=8,
            ),
            Panel(
                "Event lag p50 / p99",
                "Processing time minus event time: how late detection is.",
                tuple(
                    Query(
                        f"histogram_quantile({q}, sum by (le) "
                        f"(rate(sessionwatch_event_lag_seconds_bucket[{RATE}])))",
                        f"p{int(q * 100)}",
                    )
                    for q in (0.5, 0.99)
                ),
                unit="s",
                width=8,
            ),
        ),
    ),
    Row(
        "Pipeline health",
        (
            Panel(
                "Consumer lag (messages)",
                "End offset minus committed offset of each topic, from Faust's sensor: "
                "messages not yet committed. Commits follow state checkpoints, so this "
                "counts seconds of applied events too; 'not applied' is session-events "
                "records the workers have yet to apply.",
                (
                    Query(
                        "sum by (topic) (faust_topic_partition_end_offset"
                        " - faust_topic_partition_offset_commited)",
                        "{{topic}}",
                    ),
                    Query("sum(sessionwatch_records_behind)", "not applied"),
                ),
                width=8,
            ),
            Panel(
                "Batch processing time p99",
                "Wall time per batch of events in the agent.",
                (
                    Query(
                        "histogram_quantile(0.99, sum by (le) "
                        f"(rate(sessionwatch_processing_seconds_bucket[{RATE}])))",
                        "p99",
                    ),
                ),
                unit="s",
                width=8,
            ),
            Panel(
                "Worker rebalances",
                "Rebalances each worker went through (Faust's counter); steps mean "
                "workers joined, left or crashed.",
                (Query("sum by (instance) (faust_total_rebalances)", "{{instance}}"),),
                width=8,
            ),
            Panel(
                "Workers up",
                "Workers Prometheus can scrape.",
                (Query('sum(up{job="sessionwatch"})'),),
                kind="stat",
                width=8,
            ),
            Panel(
                "Partitions held by no worker",
                "Partitions of session-events no worker holds: nothing is detected on them "
                "until one does (a dead worker's wait SESSIONWATCH_FAILOVER_SECONDS). "
                "Should be 0; alert SessionwatchPartitionsUnwatched.",
                (
                    Query(
                        "max(sessionwatch_input_partitions) - sum(sessionwatch_partitions_assigned)"
                    ),
                ),
                kind="stat",
                width=8,
            ),
            Panel(
                "State entries",
                "Entries kept in the workers' local state, by table.",
                (Query("sum by (table) (sessionwatch_state_entries)", "{{table}}"),),
                width=8,
            ),
        ),
    ),
)


def _panel(panel: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    targets = []
    for i, q in enumerate(panel.queries):
        target: dict[str, Any] = {
            "datasource": DATASOURCE,
            "expr": q.expr,
            "legendFormat": q.legend or "__auto",
            "refId": chr(ord("A") + i),
        }
        if q.instant:
            target["instant"] = True
            target["range"] = False
        targets.append(target)
    out: dict[str, Any] = {
        "id": pid,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": panel.overrides},
        "options": {},
    }
    if panel.kind == "bargauge":
        out["options"] = {"orientation": "horizontal", "displayMode": "gradient"}
    if panel.kind == "stat":
        out["options"] = {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"}
    return out


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for row in ROWS:
        panels.append(
            {
                "id": pid,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        pid, y, x, height = pid + 1, y + 1, 0, 0
        for panel in row.panels:
            if x + panel.width > 24:
                x, y, height = 0, y + height, 0
            panels.append(_panel(panel, pid, x, y))
            pid, x, height = pid + 1, x + panel.width, max(height, panel.height)
        y += height
    return {
        "uid": "sessionwatch",
        "title": "sessionwatch: hijacked sessions",
        "description": "Alerts, input quality and pipeline health of sessionwatch workers.",
        "tags": ["sessionwatch", "security", "soc"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "panels": panels,
    }


def queries() -> list[str]:
    """Every PromQL expression of the dashboard, for the tests."""
    return [q.expr for row in ROWS for panel in row.panels for q in panel.queries]


def render() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=False) + "\n"


def layout_svg() -> str:
    """A picture of the dashboard's grid (panel titles where Grafana puts them), for README."""
    cell_w, cell_h, pad = 40, 30, 4
    board = dashboard()
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in board["panels"])
    width, height = 24 * cell_w, bottom * cell_h
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="14">',
        f'<rect width="{width}" height="{height}" fill="#111217"/>',
    ]
    for p in board["panels"]:
        g = p["gridPos"]
        x, y = g["x"] * cell_w + pad, g["y"] * cell_h + pad
        w, h = g["w"] * cell_w - 2 * pad, g["h"] * cell_h - 2 * pad
        title = p["title"].replace("&", "&amp;").replace("<", "&lt;")
        if p["type"] == "row":
            parts.append(
                f'<text x="{x}" y="{y + 18}" fill="#ccccdc" font-weight="bold">{title}</text>'
            )
            continue
        parts.append(
            f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="4" '
            'fill="#181b1f" stroke="#2c3235"/>'
        )
        parts.append(f'<text x="{x + 10}" y="{y + 22}" fill="#ccccdc">{title}</text>')
        kind = {"timeseries": "time series", "stat": "stat", "bargauge": "bar gauge"}[p["type"]]
        exprs = " | ".join(t["expr"] for t in p["targets"])
        short = exprs if len(exprs) <= 9 * g["w"] else exprs[: 9 * g["w"] - 1] + "…"
        short = short.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        parts.append(f'<text x="{x + 10}" y="{y + 42}" fill="#8e8e8e" font-size="11">{kind}</text>')
        parts.append(
            f'<text x="{x + 10}" y="{y + h - 12}" fill="#6e9fff" font-size="10" '
            f'font-family="monospace">{short}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main(argv: list[str]) -> int:
    outputs = {OUT: render(), LAYOUT: layout_svg()}
    if argv[:1] == ["--check"]:
        stale = [p for p, text in outputs.items() if not p.exists() or p.read_text() != text]
        for path in stale:
            print(f"{path} is stale: run python deploy/grafana/make_dashboard.py", file=sys.stderr)
        return 1 if stale else 0
    for path, text in outputs.items():
        path.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
