"""Engine-wide behaviour: alert format, dedup, modes, expiry, determinism."""

from __future__ import annotations

import orjson

from detector.alerts import encode
from tests.helpers import FIREFOX_LINUX, SID, SID2, Story, replay, run

KEYS = [
    "alert_id",
    "kind",
    "severity",
    "ts",
    "event_id",
    "session",
    "user",
    "ip",
    "details",
    "action",
    "mode",
]


def hijack() -> Story:
    s = Story()
    s.login(0)
    s.add("logout", 5, session_id=SID, user="alice")
    s.tx(10, ip="185.220.101.4", user_agent=FIREFOX_LINUX, ticket="INC001")
    return s


def test_spec_example_raises_every_applicable_indicator_in_order() -> None:
    alerts = run(hijack())
    assert [(a.kind, a.severity) for a in alerts] == [
        ("reuse_after_logout", "critical"),
        ("ip_change", "high"),
        ("user_agent_change", "high"),
    ]


def test_alert_wire_format() -> None:
    alert = run(hijack())[0]
    record = orjson.loads(encode(alert))
    assert list(record) == KEYS
    assert record["ts"] == "2026-11-22T08:10:00Z"
    assert record["user"] == "alice" and record["ip"] == "185.220.101.4"
    assert record["action"] == "terminate_session" and record["mode"] == "monitor"
    assert record["details"]["extra"] == {"ticket": "INC001"}
    assert len(record["alert_id"]) == 32 and int(record["alert_id"], 16) >= 0


def test_alert_ids_are_deterministic_and_key_dependent_only_through_session() -> None:
    a = [x.alert_id for x in run(hijack())]
    b = [x.alert_id for x in run(hijack())]
    assert a == b and len(set(a)) == 3


def test_mode_and_severity_come_from_rules() -> None:
    cfg = {
        "rules": {
            "ip_change": {"mode": "enforce", "severity": "critical"},
            "user_agent_change": {"enabled": False},
        }
    }
    alerts = run(hijack(), cfg)
    assert [(a.kind, a.severity, a.mode) for a in alerts] == [
        ("reuse_after_logout", "critical", "monitor"),
        ("ip_change", "critical", "enforce"),
    ]


def test_lockout_action_is_lock_out_user() -> None:
    s = Story()
    s.login(0)
    s.add("lockout", 1, user="alice")
    s.tx(2)
    assert run(s)[0].action == "lock_out_user"


def test_rotation_carries_dedup_memory() -> None:
    s = Story()
    s.login(0)
    s.tx(1, ip="185.1.1.1")
    s.add("elevate", 2, session_id=SID, new_session_id=SID2, user="alice")
    s.tx(3, sid=SID2, ip="185.1.1.1")
    assert [a.kind for a in run(s)] == ["ip_change"]


def test_expired_state_is_swept_on_event_time() -> None:
    s = Story()
    for i in range(200):
        s.login(i, sid=f"{i:04d}" + SID[4:], user=f"u{i}")
    # Two days later, one event advances event time past every retention.
    s.add("unlock", 2 * 24 * 60 + 300, user="late")
    _, _, engine = replay(s.lines(), {"detector": {"remember_me_retention_days": 1}})
    store = engine.store
    assert len(store.sessions) == 0  # type: ignore[attr-defined]
    assert list(store.users) == ["late"]  # type: ignore[attr-defined]


def test_live_and_locked_state_survives_the_sweep() -> None:
    s = Story()
    s.add("lockout", 0, user="mallory")
    s.login(0)
    for m in range(20, 3 * 24 * 60, 20):
        s.tx(m)
    _, _, engine = replay(s.lines())
    assert engine.store.get_session(engine.fingerprint(SID)) is not None
    user = engine.store.get_user("mallory")
    assert user is not None and user.locked


def test_a_user_first_seen_locked_is_swept_after_unlock() -> None:
    """Locked users never expire; once unlocked they must, even if first seen locked."""
    s = Story()
    s.add("lockout", 0, user="mallory")
    s.add("unlock", 10, user="mallory")
    s.add("unlock", 3 * 24 * 60, user="late")
    _, _, engine = replay(s.lines(), {"detector": {"remember_me_retention_days": 1}})
    assert list(engine.store.users) == ["late"]  # type: ignore[attr-defined]


def test_out_of_order_event_does_not_crash_or_alert() -> None:
    s = Story()
    s.login(10)
    s.tx(5)
    assert run(s) == []


def test_redelivered_events_change_nothing() -> None:
    """At-least-once streaming re-delivers events after a crash; applying them twice is a no-op."""
    s = Story()
    s.login(0)
    s.add("elevate", 2, session_id=SID, new_session_id=SID2, user="alice")
    s.tx(3, sid=SID2)
    s.add("logout", 4, session_id=SID2, user="alice")
    lines = s.lines()
    once, _, _ = replay(lines)
    twice, _, _ = replay([*lines[:2], *lines[:2], *lines[2:]])  # login+elevate delivered again
    assert once == twice == []
