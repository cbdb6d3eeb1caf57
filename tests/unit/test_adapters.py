"""Vendor formats in (Okta System Log, OCSF) and OCSF Detection Findings out."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from detector.adapters import ADAPTERS
from detector.adapters.framing import records, to_spec_lines
from detector.adapters.ocsf_out import ATTACK, finding
from detector.alerts import Alert
from detector.cli import main
from detector.engine import Engine
from detector.fingerprint import Fingerprinter
from detector.policy import Policy
from detector.replay import Replayer
from detector.simulate import Simulation
from tests.helpers import KEY, SID
from tests.vendors import (
    ocsf_expressible,
    okta_expressible,
    servicenow_expressible,
    servicenow_view,
    to_ocsf,
    to_okta,
    to_servicenow,
)

ROOT = Path(__file__).resolve().parents[2]
POLICY = Policy.load(ROOT / "examples" / "policy.toml")


def run_vendor(data: bytes, fmt: str) -> tuple[list[Alert], list[Any], Counter[str]]:
    alerts: list[Alert] = []
    dead: list[Any] = []
    replayer = Replayer(Engine(POLICY, Fingerprinter(KEY)), alerts.append, dead.append)
    unmapped = replayer.summary.unmapped
    lines = to_spec_lines(records(io.BufferedReader(io.BytesIO(data))), ADAPTERS[fmt], unmapped)
    replayer.feed(lines, "test")
    return alerts, dead, unmapped


def convert(fmt: str, record: dict[str, Any]) -> dict[str, Any] | None:
    return ADAPTERS[fmt](record)


# -- Okta -------------------------------------------------------------------------------
def okta(event_type: str, **over: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "uuid": "u-1",
        "published": "2026-11-22T08:00:00.000Z",
        "eventType": event_type,
        "actor": {"type": "User", "alternateId": "alice@example.com"},
        "target": [],
        "outcome": {"result": "SUCCESS"},
        "client": {
            "ipAddress": "10.1.2.3",
            "userAgent": {"rawUserAgent": "Mozilla/5.0 Firefox/121.0"},
            "geographicalContext": {"country": "Germany"},
        },
        "securityContext": {"asNumber": 3320},
        "authenticationContext": {"externalSessionId": "102abc", "rootSessionId": "idxROOT"},
    }
    record.update(over)
    return record


@pytest.mark.parametrize(
    ("event_type", "result", "expected"),
    [
        ("user.session.start", "SUCCESS", "login"),
        ("user.session.start", "FAILURE", "login_failed"),
        ("user.authentication.sso", "SUCCESS", "transaction"),
        ("policy.evaluate_sign_on", "ALLOW", "transaction"),
        ("user.session.context.change", "SUCCESS", "transaction"),
        ("user.session.end", "SUCCESS", "logout"),
        ("user.session.clear", "SUCCESS", "terminate"),
    ],
)
def test_okta_session_events(event_type: str, result: str, expected: str) -> None:
    ev = convert("okta", okta(event_type, outcome={"result": result}))
    assert ev is not None and ev["type"] == expected
    assert ev.get("user") == ("alice@example.com" if expected != "terminate" else None)
    if expected != "login_failed":
        assert ev["session_id"] == "idxROOT"  # rootSessionId wins over externalSessionId
    assert ev["geo"] == {"country": "Germany"} and ev["asn"] == 3320  # kept in evidence


@pytest.mark.parametrize(
    ("event_type", "expected"),
    [
        ("user.account.lock", "lockout"),
        ("user.account.unlock_by_admin", "unlock"),
        ("user.lifecycle.deactivate", "deactivate"),
        ("user.lifecycle.activate", "activate"),
    ],
)
def test_okta_account_events_name_the_target_user(event_type: str, expected: str) -> None:
    record = okta(
        event_type,
        actor={"type": "User", "alternateId": "admin@example.com"},
        target=[{"type": "User", "alternateId": "bob@example.com"}],
    )
    ev = convert("okta", record)
    assert ev is not None
    assert (ev["type"], ev["user"], ev["actor"]) == (
        expected,
        "bob@example.com",
        "admin@example.com",
    )


def test_okta_odd_values() -> None:
    ported = convert("okta", okta("user.session.start", client={"ipAddress": "10.1.2.3:443"}))
    assert ported is not None and ported["ip"] == "10.1.2.3" and "user_agent" not in ported
    no_ua = okta("user.authentication.sso")
    no_ua["client"]["userAgent"]["rawUserAgent"] = "UNKNOWN"
    assert "user_agent" not in (convert("okta", no_ua) or {})
    zoneless = convert("okta", okta("user.session.end", published="2026-11-22T08:00:00"))
    assert zoneless is not None and zoneless["ts"] == 1795334400.0  # read as UTC
    only_external = okta("user.session.end", authenticationContext={"externalSessionId": "x1"})
    assert (convert("okta", only_external) or {})["session_id"] == "x1"
    assert convert("okta", okta("user.authentication.sso", outcome={"result": "DENY"})) is None
    cleared_all = okta("user.session.clear", authenticationContext={"externalSessionId": "unknown"})
    assert convert("okta", cleared_all) is None


def test_okta_unmapped_types_are_counted_not_dead_lettered() -> None:
    lines = [
        okta("user.mfa.factor.activate"),
        okta("app.oauth2.token.grant"),
        okta("user.mfa.factor.activate"),
        okta("user.session.start", client={"ipAddress": None}),  # a login needs an IP
    ]
    _, dead, unmapped = run_vendor(b"\n".join(map(orjson.dumps, lines)), "okta")
    assert unmapped == {"user.mfa.factor.activate": 2, "app.oauth2.token.grant": 1}
    assert [d.reason.split(":")[0] for d in dead] == ["missing_field"]
    assert dead[0].offset == 4 and dead[0].source == "test"


# -- OCSF in ----------------------------------------------------------------------------
def test_ocsf_authentication_and_http_activity() -> None:
    base = {"time": 1795334400000, "metadata": {"uid": "m1"}, "src_endpoint": {"ip": "10.1.2.3"}}
    logon = {**base, "class_uid": 3002, "activity_id": 1, "status_id": 1,
             "user": {"name": "alice"}, "session": {"uid": SID}}  # fmt: skip
    ev = convert("ocsf", logon)
    assert ev == {"event_id": "m1", "ts": 1795334400.0, "ip": "10.1.2.3", "type": "login",
                  "session_id": SID, "user": "alice"}  # fmt: skip
    failed = convert("ocsf", {**logon, "status_id": 2})
    assert failed is not None and failed["type"] == "login_failed" and "session_id" not in failed
    logoff = convert("ocsf", {**logon, "activity_id": 2})
    assert logoff is not None and logoff["type"] == "logout"
    http = {**base, "class_uid": 4002, "activity_id": 3,
            "src_endpoint": {"ip": "[2001:db8::7]:8443"}, "actor": {"session": {"uid": SID}},
            "http_request": {"url": {"path": "/incident.do", "scheme": "http"}}}  # fmt: skip
    tx = convert("ocsf", http)
    assert tx == {
        "event_id": "m1",
        "ts": 1795334400.0,
        "ip": "2001:db8::7",
        "type": "transaction",
        "session_id": SID,
        "url": "/incident.do",
        "scheme": "http",
    }  # fmt: skip  (a guest request: no user)
    assert convert("ocsf", {**base, "class_uid": 3002, "activity_id": 3}) is None  # ticket
    assert convert("ocsf", {**base, "class_uid": 1001, "activity_id": 1}) is None  # file


# -- round trips ------------------------------------------------------------------------
def _day() -> list[dict[str, Any]]:
    buf = io.BytesIO()
    Simulation(users=40, hours=24, seed=11).write(buf)
    return [orjson.loads(line) for line in buf.getvalue().splitlines()]


def _spec_alerts(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    alerts: list[Alert] = []
    replayer = Replayer(Engine(POLICY, Fingerprinter(KEY)), alerts.append, lambda d: None)
    replayer.feed([orjson.dumps(e) for e in events], "spec")
    return [(a.alert_id, a.kind) for a in alerts]


def test_okta_round_trip_gives_the_same_alerts() -> None:
    events = [e for e in _day() if okta_expressible(e)]
    expected = _spec_alerts(events)
    assert len(expected) > 10
    as_array = orjson.dumps([to_okta(e) for e in events])  # the API's JSON array framing
    alerts, dead, unmapped = run_vendor(as_array, "okta")
    assert [(a.alert_id, a.kind) for a in alerts] == expected
    assert not dead and not unmapped


def test_ocsf_round_trip_gives_the_same_alerts() -> None:
    events = [e for e in _day() if ocsf_expressible(e)]
    expected = _spec_alerts(events)
    assert len(expected) > 5
    ndjson = b"\n".join(orjson.dumps(to_ocsf(e)) for e in events)
    alerts, dead, _ = run_vendor(ndjson, "ocsf")
    assert [(a.alert_id, a.kind) for a in alerts] == expected
    assert not dead


# -- OCSF out ---------------------------------------------------------------------------
#: Required by the OCSF schema for class 2004: base event, finding, finding_info,
#: metadata (ocsf-schema: events/base_event.json, events/findings/finding.json,
#: objects/finding_info.json, objects/metadata.json).
REQUIRED = {"activity_id", "category_uid", "class_uid", "metadata", "severity_id", "time",
            "type_uid", "finding_info"}  # fmt: skip


def _alert(kind: str, severity: str = "critical", user: str | None = "alice") -> Alert:
    return Alert(
        alert_id="4ba8f73af45d82b6f340997992ebffc8",
        kind=kind,
        severity=severity,
        ts="2026-11-22T08:00:00.25Z",
        event_id="e7",
        session="0123456789abcdef0123456789abcdef",
        user=user,
        ip="10.1.2.3",
        details={"ended": "logout"},
        action="terminate_session",
        mode="enforce",
    )


def test_ocsf_findings_carry_the_required_fields() -> None:
    f = finding(_alert("reuse_after_logout"))
    assert set(f) >= REQUIRED
    assert (f["class_uid"], f["category_uid"], f["activity_id"]) == (2004, 2, 1)
    assert f["type_uid"] == 200401 and f["severity_id"] == 5 and f["time"] == 1795334400250
    assert f["finding_info"]["uid"] == "4ba8f73af45d82b6f340997992ebffc8"
    assert {"version", "product"} <= set(f["metadata"])
    assert f["finding_info"]["attacks"][0]["technique"]["uid"] == "T1550.004"
    evidence = f["evidences"][0]
    assert evidence["src_endpoint"] == {"ip": "10.1.2.3"}
    assert evidence["actor"]["session"]["uid"] == "0123456789abcdef0123456789abcdef"
    json.dumps(f)  # plain JSON types only


def test_ocsf_findings_map_severities_and_techniques() -> None:
    assert (
        finding(_alert("weak_session_id", "medium"))["finding_info"]["attacks"][0]["technique"][
            "uid"
        ]
        == "T1539"
    )
    assert [finding(_alert("ip_change", s))["severity_id"] for s in ("low", "medium", "high")] == [
        2,
        3,
        4,
    ]
    guest = finding(_alert("unknown_session", "low", user=None))
    assert "user" not in guest["evidences"][0]["actor"]
    assert finding(_alert("ip_change"))["finding_info"]["analytic"]["type_id"] == 1  # Rule
    model = finding(_alert("behaviour_anomaly", "medium"))["finding_info"]["analytic"]
    assert (model["type_id"], model["type"]) == (4, "Learning (ML/DL)")
    assert set(ATTACK) >= {"reuse_after_logout", "session_fixation", "insecure_transport"}


def test_cli_replays_okta_and_writes_ocsf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSIONWATCH_KEY", KEY.decode())
    events = [e for e in _day() if okta_expressible(e)]
    src = tmp_path / "okta.ndjson"
    src.write_bytes(b"\n".join(orjson.dumps(to_okta(e)) for e in events) + b"\n")
    out = tmp_path / "findings.jsonl"
    code = main(
        [
            *("replay", "-q", "--config", str(ROOT / "examples" / "policy.toml")),
            *("--format", "okta", "--alerts-format", "ocsf", "--alerts-out", str(out), str(src)),
        ]
    )
    assert code == 0
    findings = [json.loads(line) for line in out.read_text().splitlines()]
    expected = _spec_alerts(events)
    assert [f["finding_info"]["uid"] for f in findings] == [a for a, _ in expected]


# -- ServiceNow -------------------------------------------------------------------------
def test_servicenow_transaction_rows() -> None:
    row = {
        "sys_id": {"value": "t1", "display_value": "t1"},  # sysparm_display_value=all
        "sys_created_on": "2026-11-22 08:00:00",
        "sys_created_by": "guest",
        "session": SID,
        "remote_ip": "10.1.2.3:443",
        "url": "/login.do",
        "user_agent": "",
        "system_id": "node-a",
        "protocol": "HTTP",
        "output_length": "5120",
    }
    ev = convert("servicenow-transactions", row)
    assert ev == {"event_id": "t1", "ts": 1795334400.0, "type": "transaction",
                  "session_id": SID, "guest": True, "ip": "10.1.2.3", "url": "/login.do",
                  "node": "node-a", "scheme": "http", "output_length": "5120"}  # fmt: skip
    from zoneinfo import ZoneInfo

    from detector.adapters.servicenow import convert_transaction

    berlin = convert_transaction({**row, "sys_created_by": "alice"}, ZoneInfo("Europe/Berlin"))
    assert berlin is not None and berlin["ts"] == 1795334400.0 - 3600 and berlin["user"] == "alice"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("login", "login"),
        ("external.authentication.succeeded", "login"),
        ("login.failed", "login_failed"),
        ("external.authentication.failed", "login_failed"),
        ("logout", "logout"),
        ("session.established", "transaction"),
        ("security.elevated_role.enabled", "elevate"),
        ("impersonation.start", "elevate"),
        ("impersonation.end", "elevate"),
    ],
)
def test_servicenow_sysevent_rows(name: str, expected: str) -> None:
    row = {"sys_id": "e1", "sys_created_on": "2026-11-22 08:00:00", "name": name,
           "parm1": "alice", "parm2": "10.1.2.3:51234", "session": SID}  # fmt: skip
    ev = convert("servicenow-events", row)
    assert ev is not None and ev["type"] == expected and ev["user"] == "alice"
    assert ev["ip"] == "10.1.2.3"
    assert ("session_id" in ev) == (expected != "login_failed")


def test_servicenow_csv_export_and_unmapped_events() -> None:
    csv_text = (
        '\ufeff"sys_id","sys_created_on","name","parm1","parm2","session"\n'
        '"e1","2026-11-22 08:00:00","login","alice","10.1.2.3","' + SID + '"\n'
        '"e2","2026-11-22 08:01:00","incident.inserted","alice","",""\n'
        '"e3","2026-11-22 08:02:00","logout","alice","","' + SID + '"\n'
        '"e4","2026-11-22 08:03:00","login","alice","","' + SID + '"\n'  # no IP: refused
    )
    alerts, dead, unmapped = run_vendor(csv_text.encode(), "servicenow-events")
    assert unmapped == {"incident.inserted": 1}
    assert [(d.reason.split(":")[0], d.offset) for d in dead] == [("missing_field", 4)]
    assert alerts == []


def test_servicenow_round_trip_gives_the_same_alerts() -> None:
    from detector.adapters.servicenow import convert_event, convert_transaction

    events = [servicenow_view(e) for e in _day() if servicenow_expressible(e)]
    expected = _spec_alerts(events)
    assert len(expected) > 10
    rows = [to_servicenow(e) for e in events]
    mapped = [convert_event(r) if "name" in r else convert_transaction(r) for r in rows]
    assert all(m is not None for m in mapped)
    assert _spec_alerts([m for m in mapped if m is not None]) == expected


def test_import_policy_from_sys_properties(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = {
        "result": [
            {"name": "glide.ui.session_timeout", "value": "45", "type": "integer"},
            {"name": "glide.ui.active.session.life_span", "value": "480"},
            {"name": "glide.guest.session_timeout", "value": {"value": "10"}},
            {"name": "glide.ui.polaris.theme", "value": "dark"},  # not a session property
        ]
    }
    src = tmp_path / "sys_properties.json"
    src.write_bytes(orjson.dumps(export))
    out = tmp_path / "policy.toml"
    assert main(["import-policy", str(src), "-o", str(out)]) == 0
    policy = Policy.load(out)
    assert (policy.idle_timeout_s, policy.life_span_s, policy.guest_idle_timeout_s) == (
        45 * 60.0,
        480 * 60.0,
        10 * 60.0,
    )
    assert "polaris" not in out.read_text()
    bad = tmp_path / "bad.csv"
    bad.write_text(
        '"name","value"\n"glide.ui.session_timeout","60"\n'
        '"glide.ui.active.session.life_span","30"\n'
    )
    assert main(["import-policy", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.csv" in err and "life_span" in err


def test_servicenow_mixed_exports_with_user_snapshots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sysevent + syslog_transaction (CSV) + two sys_user snapshots, merged by time: a
    lock-out seen only as a snapshot change flags the session used after it."""
    monkeypatch.setenv("SESSIONWATCH_KEY", KEY.decode())
    events = tmp_path / "sysevent.json"
    events.write_bytes(
        orjson.dumps(
            {
                "result": [
                    {
                        "sys_id": "e1",
                        "sys_created_on": "2026-11-22 08:00:00",
                        "name": "login",
                        "parm1": "alice",
                        "parm2": "10.1.2.3:50000",
                        "session": SID,
                    }
                ]
            }
        )
    )
    tx = tmp_path / "syslog_transaction.csv"
    tx.write_text(
        '"sys_id","sys_created_on","sys_created_by","session","remote_ip","url"\n'
        f'"t1","2026-11-22 08:05:00","alice","{SID}","10.1.2.3","/incident.do"\n'
        f'"t2","2026-11-22 08:20:00","alice","{SID}","10.1.2.3","/incident.do"\n'
    )
    snap1, snap2 = tmp_path / "users-1.json", tmp_path / "users-2.json"
    snap1.write_bytes(
        orjson.dumps(
            {
                "result": [
                    {
                        "user_name": "alice",
                        "locked_out": "false",
                        "active": "true",
                        "sys_updated_on": "2026-11-01 07:00:00",
                    },
                    {
                        "user_name": "bob",
                        "locked_out": "true",
                        "active": "true",
                        "sys_updated_on": "2026-11-01 07:00:00",
                    },
                ]
            }
        )
    )
    snap2.write_bytes(
        orjson.dumps(
            {
                "result": [
                    {
                        "user_name": "alice",
                        "locked_out": "true",
                        "active": "true",
                        "sys_updated_on": "2026-11-22 08:10:00",
                        "sys_updated_by": "admin",
                    },
                    {
                        "user_name": "bob",
                        "locked_out": "true",
                        "active": "true",
                        "sys_updated_on": "2026-11-01 07:00:00",
                    },
                ]
            }
        )
    )
    out = tmp_path / "alerts.jsonl"
    code = main(
        [
            *("replay", "-q", "--config", str(ROOT / "examples" / "policy.toml")),
            *("--format", "servicenow", "--alerts-out", str(out)),
            *map(str, (events, tx, snap1, snap2)),
        ]
    )
    assert code == 0
    alerts = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(a["kind"], a["event_id"]) for a in alerts] == [("locked_out_activity", "t2")]


def test_okta_geolocation_feeds_impossible_travel() -> None:
    def at(uuid: str, kind: str, minute: int, lat: float, lon: float) -> dict[str, Any]:
        record = okta(kind, uuid=uuid, published=f"2026-11-22T08:{minute:02d}:00.000Z")
        record["client"]["geographicalContext"] = {
            "city": "x",
            "geolocation": {"lat": lat, "lon": lon},
        }
        return record

    lines = [
        at("a1", "user.session.start", 0, 52.52, 13.405),  # Berlin
        at("a2", "user.authentication.sso", 30, -33.87, 151.21),  # Sydney, 30 min later
    ]
    alerts, dead, _ = run_vendor(b"\n".join(map(orjson.dumps, lines)), "okta")
    assert not dead
    travel = [(a.kind, a.event_id) for a in alerts if a.kind == "impossible_travel"]
    assert travel == [("impossible_travel", "a2")]  # ("idxROOT" is also a weak_session_id)
    half = okta("user.session.start")
    half["client"]["geographicalContext"] = {"geolocation": {"lat": 52.5}}
    assert "geo_lat" not in (convert("okta", half) or {"geo_lat": 1})
