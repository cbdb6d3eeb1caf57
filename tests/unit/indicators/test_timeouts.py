"""idle_timeout_exceeded and lifespan_exceeded."""

from __future__ import annotations

from tests.helpers import SID, Story, raised, run

SPAN = {"policy": {"glide.ui.active.session.life_span": 120}}
GUEST = {"policy": {"glide.guest.session_timeout": 10, "glide.guest.active.session.life_span": 20}}


def test_gap_above_idle_timeout() -> None:
    s = Story()
    s.login(0)
    e = s.tx(31)
    alerts = run(s)
    assert [(a.kind, a.event_id) for a in alerts] == [("idle_timeout_exceeded", e)]
    assert alerts[0].details["idle_seconds"] == 31 * 60


def test_gap_at_timeout_plus_skew_is_tolerated() -> None:
    s = Story()
    s.login(0)
    s.tx(30 + 5 / 60)
    assert raised(s) == []


def test_remember_me_is_exempt_from_idle_timeout() -> None:
    s = Story()
    s.login(0, remember_me=True)
    s.tx(240)
    assert raised(s) == []


def test_steady_activity_never_idles() -> None:
    s = Story()
    s.login(0)
    for m in range(20, 600, 25):
        s.tx(m)
    assert raised(s) == []


def test_guest_idle_timeout_is_the_guest_value() -> None:
    s = Story()
    s.tx(0, user=None, guest=True)
    e = s.tx(11, user=None, guest=True)
    assert raised(s, GUEST) == [("idle_timeout_exceeded", e)]


def test_life_span_applies_whatever_the_activity() -> None:
    s = Story()
    s.login(0, remember_me=True)
    for m in range(20, 121, 20):
        s.tx(m)
    e = s.tx(121)
    assert raised(s, SPAN) == [("lifespan_exceeded", e)]


def test_life_span_off_by_default() -> None:
    s = Story()
    s.login(0)
    for m in range(20, 1000, 20):
        s.tx(m)
    assert raised(s) == []


def test_guest_life_span_starts_at_first_event() -> None:
    s = Story()
    s.tx(0, user=None, guest=True)
    s.tx(9, user=None, guest=True)
    s.tx(18, user=None, guest=True)
    e = s.tx(21, user=None, guest=True)
    assert raised(s, GUEST) == [("lifespan_exceeded", e)]


def test_ended_sessions_do_not_time_out() -> None:
    s = Story()
    s.login(0)
    s.add("logout", 1, session_id=SID, user="alice")
    e = s.tx(300)
    assert raised(s) == [("reuse_after_logout", e)]
