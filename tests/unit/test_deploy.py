"""Deployment files checked by the real tools: promtool, docker-compose; the dashboard
is current, its queries parse, and the files agree with each other."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import yaml

from tests.tools import ROOT, dashboard_queries, make_dashboard, metric_names, promtool, tool

PROM = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"


def compose() -> dict[str, Any]:
    out = subprocess.run(
        [tool("docker-compose"), "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"},
    )
    assert out.returncode == 0, out.stderr
    loaded: dict[str, Any] = yaml.safe_load(out.stdout)
    return loaded


def test_prometheus_config_and_rules_pass_promtool() -> None:
    for args in (
        ("check", "config", str(PROM / "prometheus.yml")),
        ("check", "rules", str(PROM / "rules.yml")),
        ("test", "rules", str(PROM / "rules_test.yml")),
    ):
        done = promtool(*args)
        assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}{done.stderr}"


def test_rule_unit_tests_can_fail() -> None:
    """Guards against a rules test that passes whatever the rules say."""
    rules = yaml.safe_load((PROM / "rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "SessionwatchWorkerDown":
                rule["expr"] = 'up{job="sessionwatch"} == 2'
    broken = PROM / ".broken-rules.yml"
    tests = PROM / ".broken-rules_test.yml"
    try:
        broken.write_text(yaml.safe_dump(rules))
        tests.write_text((PROM / "rules_test.yml").read_text().replace("rules.yml", broken.name))
        done = promtool("test", "rules", str(tests))
        assert done.returncode != 0 and "SessionwatchWorkerDown" in done.stdout + done.stderr
    finally:
        broken.unlink(missing_ok=True)
        tests.unlink(missing_ok=True)


def test_committed_dashboard_is_generated_from_code() -> None:
    assert make_dashboard.main(["--check"]) == 0, "run python deploy/grafana/make_dashboard.py"
    board = json.loads((GRAFANA / "dashboards" / "sessionwatch.json").read_text())
    titles = {p["title"] for p in board["panels"]}
    for needed in (
        "Alerts per minute by kind and severity",
        "Top indicators (time range)",
        "Active sessions",
        "Invalid events by reason (per minute)",
        "Event lag p50 / p99",
        "Throughput (events/s)",
        "Consumer lag (messages)",
        "Worker rebalances",
    ):
        assert needed in titles


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 12
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:q{i}", "expr": q} for i, q in enumerate(queries)],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    # and promtool does reject a broken one
    path.write_text(path.read_text().replace("sum by (kind)", "sum by (kind", 1))
    assert promtool("check", "rules", str(path)).returncode != 0


def test_dashboard_reads_only_known_metric_names() -> None:
    spec_names = {
        "sessionwatch_events_total",
        "sessionwatch_invalid_events_total",
        "sessionwatch_alerts_total",
        "sessionwatch_active_sessions",
        "sessionwatch_event_lag_seconds_bucket",
        "sessionwatch_processing_seconds_bucket",
        "sessionwatch_state_entries",
    }
    faust = {
        "faust_topic_partition_end_offset",
        "faust_topic_partition_offset_commited",
        "faust_total_rebalances",
    }
    worker = {  # worker only, beyond SPEC.md (README)
        "sessionwatch_records_behind",
        "sessionwatch_partitions_assigned",
        "sessionwatch_input_partitions",
    }
    used = set().union(*(metric_names(q) for q in dashboard_queries()))
    known = spec_names | worker | faust
    assert used <= known | {"up"}, used - known
    # (the integration test checks the same names against a live worker's scrape)


def test_the_image_builds_the_compiled_path_as_make_does_and_installs_it() -> None:
    """No Docker engine here to build it: the stage runs the Makefile's build command
    (``pip ... ./native``, which CI runs for real) and the image installs its wheel."""
    dockerfile = (ROOT / "deploy" / "docker" / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet ./native" in makefile
    assert "FROM rust:1-slim-bookworm AS native" in dockerfile
    assert "pip wheel --no-cache-dir /src/native -w /wheels" in dockerfile
    assert "COPY --from=native /wheels /wheels" in dockerfile
    assert "'.[stream]' /wheels/*.whl" in dockerfile
    assert "native/target" in (ROOT / ".dockerignore").read_text().split()


def test_compose_file_is_valid_and_wired_together() -> None:
    config = compose()
    services = config["services"]
    assert {"kafka", "worker-1", "worker-2", "simulator", "prometheus", "grafana"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    # Prometheus scrapes exactly the workers compose runs, on their web port.
    prom = yaml.safe_load((PROM / "prometheus.yml").read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "sessionwatch")
    targets = set(job["static_configs"][0]["targets"])
    workers = {
        f"{name}:{svc['environment']['SESSIONWATCH_WEB_PORT']}"
        for name, svc in services.items()
        if svc.get("command", [None])[0] == "worker"
    }
    assert targets == workers
    for name in ("worker-1", "worker-2"):
        env = services[name]["environment"]
        assert env["SESSIONWATCH_WEB_BIND"] == "0.0.0.0" and env["SESSIONWATCH_WEB_HOST"] == name
        # A worker that stops on a lost write is started again, and its health is its
        # own web server answering on the port it listens on.
        assert services[name]["restart"] == "unless-stopped"
        probe = " ".join(services[name]["healthcheck"]["test"])
        assert f"http://127.0.0.1:{env['SESSIONWATCH_WEB_PORT']}/metrics" in probe
    # Grafana gets the provisioning and dashboards this repo ships.
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"]}
    assert Path(mounts["/etc/grafana/provisioning"]) == GRAFANA / "provisioning"
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/sessionwatch.yml").read_text())
    assert Path(mounts[provider["providers"][0]["options"]["path"]]) == GRAFANA / "dashboards"
    # Published ports stay on the loopback interface.
    for svc in services.values():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), port


def test_grafana_datasource_uid_matches_the_dashboard() -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    uid = ds["datasources"][0]["uid"]
    board = json.loads((GRAFANA / "dashboards" / "sessionwatch.json").read_text())
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == uid


def test_layout_picture_shows_every_panel() -> None:
    svg = ElementTree.parse(GRAFANA / "sessionwatch-layout.svg").getroot()
    texts = {t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")}
    board = json.loads((GRAFANA / "dashboards" / "sessionwatch.json").read_text())
    assert {p["title"] for p in board["panels"]} <= texts
