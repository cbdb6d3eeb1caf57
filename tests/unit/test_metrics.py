"""SPEC.md §7 metrics: the numbers agree with what replay did, labels stay bounded,
and the exposition served over HTTP passes the real `promtool check metrics`."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

from prometheus_client import generate_latest

from detector.engine import Engine
from detector.events import REASONS
from detector.fingerprint import Fingerprinter
from detector.metrics import EVENT_TYPES, SEVERITIES, Histogram, registry_with
from detector.policy import CATALOGUE, Policy
from detector.replay import JsonLinesWriter, Replayer
from tests.tools import ROOT, own_families, promtool, samples, scrape, total

SAMPLE = ROOT / "examples" / "sample-events.jsonl"
POLICY = ROOT / "examples" / "policy.toml"


def _replay(tmp: Path) -> tuple[Replayer, int, str]:
    engine = Engine(Policy.load(POLICY), Fingerprinter(b"metrics-test"))
    with open(tmp / "alerts.jsonl", "wb") as fh:
        alerts = JsonLinesWriter(fh)
        replayer = Replayer(engine, alerts, lambda d: None)
        replayer.run([str(SAMPLE)])
        alerts.flush()
    text = generate_latest(registry_with(replayer.metrics)).decode()
    return replayer, alerts.count, text


def test_metrics_agree_with_the_replay(tmp_path: Path) -> None:
    replayer, written, text = _replay(tmp_path)
    values = samples(text)
    summary = replayer.summary
    assert total(values, "sessionwatch_events_total") == summary.events == 974
    assert total(values, "sessionwatch_alerts_total") == written == summary.alerts_total == 17
    assert values[("sessionwatch_events_total", (("type", "login"),))] == summary.by_type["login"]
    assert values[("sessionwatch_event_lag_seconds_count", ())] == summary.events
    assert values[("sessionwatch_processing_seconds_count", ())] >= 1
    store = replayer.engine.store
    entries = values[("sessionwatch_state_entries", (("table", "sessions"),))]
    assert entries == len(store.sessions) > 0  # type: ignore[attr-defined]
    assert ("sessionwatch_active_sessions", (("kind", "guest"),)) in values


def test_label_values_come_from_closed_sets(tmp_path: Path) -> None:
    _, _, text = _replay(tmp_path)
    allowed = {
        "type": set(EVENT_TYPES),
        "reason": set(REASONS),
        "kind": set(CATALOGUE) | {"user", "guest"},
        "severity": set(SEVERITIES),
        "table": {"sessions", "users", "state"},
        "format": {"okta", "ocsf", "servicenow-transactions", "servicenow-events"},
        "le": None,  # histogram bounds
    }
    values: set[str] = set()
    for (_, labels), _ in samples(text).items():
        for name, value in labels:
            assert name in allowed, name
            ok = allowed[name]
            assert ok is None or value in ok, (name, value)
            values.add(value)
    events = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    personal = {e.get(k) for e in events for k in ("user", "ip", "session_id")} - {None}
    assert len(personal) > 50 and not personal & values


def test_histogram_buckets_are_cumulative() -> None:
    h = Histogram((1.0, 5.0))
    for v in (0.5, 0.7, 3.0, 9.0):
        h.observe(v)
    family = h.family("x_seconds", "doc")
    buckets = [(s.labels["le"], s.value) for s in family.samples if s.name.endswith("_bucket")]
    assert buckets == [("1.0", 2.0), ("5.0", 3.0), ("+Inf", 4.0)]
    assert h.sum == 13.2


def test_the_worker_reports_the_partitions_it_holds_and_the_topic_has(tmp_path: Path) -> None:
    """What alert SessionwatchPartitionsUnwatched subtracts; replay reports neither."""
    replayer, _, text = _replay(tmp_path)
    assert "sessionwatch_partitions_assigned" not in text
    replayer.metrics.partitions = lambda: (3, 8)
    values = samples(generate_latest(registry_with(replayer.metrics)).decode())
    assert values[("sessionwatch_partitions_assigned", ())] == 3
    assert values[("sessionwatch_input_partitions", ())] == 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_replay_serves_metrics_that_promtool_accepts(tmp_path: Path) -> None:
    port = _free_port()
    out = tmp_path / "alerts.jsonl"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "detector.cli", "replay", "-q", "--config", str(POLICY)),
            *("--alerts-out", str(out), "--metrics-port", str(port), "--metrics-linger", "60"),
            str(SAMPLE),
        ],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
    )
    try:
        text = ""
        for _ in range(200):
            try:
                text = scrape(f"http://127.0.0.1:{port}/metrics")
                if out.exists() and total(samples(text), "sessionwatch_alerts_total") == 17:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.1)
        assert total(samples(text), "sessionwatch_alerts_total") == out.read_bytes().count(b"\n")
        check = promtool("check", "metrics", stdin=text.encode())
        assert check.returncode == 0, check.stdout + check.stderr
        # The lint is real: it does refuse a badly named metric.
        bad = promtool("check", "metrics", stdin=b"# TYPE x_ms counter\nx_ms 1\n")
        assert bad.returncode != 0
        assert own_families(text).count("sessionwatch_") > 20
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_metrics_port_in_use_is_refused_clearly(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "detector.cli",
                "replay",
                "-q",
                "--metrics-port",
                str(port),
                str(SAMPLE),
            ],
            cwd=tmp_path,
            capture_output=True,
            timeout=60,
        )
    assert proc.returncode == 2
    assert f"cannot serve metrics on 127.0.0.1:{port}" in proc.stderr.decode()
