"""The SOC's view for real: a Prometheus server scrapes a running worker while simulated
traffic flows; every dashboard query returns data through Prometheus' HTTP API, the
counters agree with session-alerts, the alerting rules load and fire."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.streaming import (
    ROOT,
    Deployment,
    Factory,
    alert_ids,
    free_port,
    simulated_day,
)
from tests.tools import dashboard_queries, metric_names, own_families, promtool, scrape, tool

pytestmark = pytest.mark.kafka


class Prometheus:
    """A real Prometheus server on 127.0.0.1 scraping one target every second."""

    def __init__(self, tmp: Path, target: str) -> None:
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ROOT / "deploy" / "prometheus" / "rules.yml")],
            "scrape_configs": [
                {"job_name": "sessionwatch", "static_configs": [{"targets": [target]}]}
            ],
        }
        path = tmp / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        self.log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={path}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{self.url}/-/ready", timeout=2).close()
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        raise AssertionError("Prometheus did not become ready")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Any]:
    started: list[Prometheus] = []

    def start(target: str) -> Prometheus:
        p = Prometheus(tmp_path, target)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def _value(result: list[dict[str, Any]]) -> float:
    return sum(float(r["value"][1]) for r in result)


def test_dashboard_queries_return_data_and_counters_agree(
    deployment_factory: Factory, prometheus_for: Any, tmp_path: Path
) -> None:
    day, expected = simulated_day(tmp_path)
    d: Deployment = deployment_factory(4)
    web = free_port()
    d.start_worker("w", web_port=web)
    prom: Prometheus = prometheus_for(f"127.0.0.1:{web}")
    producer = subprocess.Popen(
        [
            *(sys.executable, "-m", "detector.cli", "produce", "--config", "examples/policy.toml"),
            *("--rate", "300", str(day)),
        ],
        env=d.env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    got = d.collect(d.topics["alerts"], lambda v: alert_ids(v) >= expected, timeout=180)
    producer.wait(60)
    assert alert_ids(got) == expected, d.logs()

    # Prometheus' view of the counters agrees with what reached session-alerts (and with
    # the events produced: the last ones may still be in flight when the alerts are in).
    lines = day.read_bytes().count(b"\n")
    seen, events = -1.0, -1.0
    for _ in range(90):
        seen = _value(prom.query("sum(sessionwatch_alerts_total)"))
        events = _value(prom.query("sum(sessionwatch_events_total)"))
        if seen == len(expected) and events == lines:
            break
        time.sleep(1)
    assert (seen, events) == (len(expected), lines)
    # Nothing is left to apply on any of the four partitions, whatever is still waiting
    # for its checkpoint's commit.
    behind = prom.query("sessionwatch_records_behind")
    assert sorted(r["metric"]["partition"] for r in behind) == ["0", "1", "2", "3"], behind
    for _ in range(30):
        if _value(prom.query("sum(sessionwatch_records_behind)")) == 0:
            break
        time.sleep(1)
    assert _value(prom.query("sum(sessionwatch_records_behind)")) == 0
    # The one worker holds all four partitions: alert SessionwatchPartitionsUnwatched's
    # expression reads 0 through the real Prometheus.
    assert _value(prom.query("sum(sessionwatch_partitions_assigned)")) == 4
    unheld = "max(sessionwatch_input_partitions) - sum(sessionwatch_partitions_assigned)"
    assert _value(prom.query(unheld)) == 0
    by_kind = {
        r["metric"]["kind"]: float(r["value"][1])
        for r in prom.query("sum by (kind) (sessionwatch_alerts_total)")
    }
    written: dict[str, int] = {}
    for value in got:
        alert = json.loads(value)
        written[alert["kind"]] = written.get(alert["kind"], 0) + 1
    assert by_kind == written

    # Every dashboard query returns data through the HTTP API.
    for expr in dashboard_queries():
        result = prom.query(expr)
        assert result, f"no data for dashboard query {expr}"
        if "histogram_quantile" in expr:
            assert all(math.isfinite(float(r["value"][1])) for r in result), (expr, result)

    # ... and reads only names this worker exports (plus Prometheus' own `up`).
    text = scrape(f"http://127.0.0.1:{web}/metrics")
    exported = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}
    for expr in dashboard_queries():
        for name in metric_names(expr):
            assert name == "up" or name in exported, name

    # The alerting rules loaded, and critical session reuse in the day fires.
    groups = {g["name"] for g in prom.api("rules")["groups"]}
    assert "sessionwatch" in groups
    assert prom.query("sessionwatch:consumer_lag:sum")
    firing = {
        a["labels"]["alertname"] for a in prom.api("alerts")["alerts"] if a["state"] == "firing"
    }
    assert "SessionwatchCriticalSessionReuse" in firing
    assert "SessionwatchWorkerDown" not in firing

    # promtool accepts our families as they are served; Faust's own names break its
    # naming lint (``_ms`` units), which is not ours to rename: only lint complaints.
    own = promtool("check", "metrics", stdin=own_families(text).encode())
    assert own.returncode == 0, own.stdout + own.stderr
    everything = promtool("check", "metrics", stdin=text.encode())
    complaints = [c for c in (everything.stdout + everything.stderr).splitlines() if c.strip()]
    assert all(c.startswith("faust_") for c in complaints), complaints
