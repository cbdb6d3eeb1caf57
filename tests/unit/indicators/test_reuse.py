"""reuse_after_logout / _termination / _rotation: positive and benign look-alikes."""

from __future__ import annotations

from tests.helpers import SID, SID2, Story, raised

GRACE = {"policy": {"glide.unauthorized.session_timeout": 5}}


def test_activity_after_logout_is_critical_reuse() -> None:
    s = Story()
    s.login(0)
    s.add("logout", 10, session_id=SID, user="alice")
    e = s.tx(11)
    assert raised(s) == [("reuse_after_logout", e)]


def test_activity_inside_logout_grace_is_not_reuse() -> None:
    s = Story()
    s.login(0)
    s.add("logout", 10, session_id=SID, user="alice")
    s.tx(14)
    assert raised(s, GRACE) == []
    late = s.tx(15.2)
    assert raised(s, GRACE) == [("reuse_after_logout", late)]


def test_clock_skew_tolerated_right_after_logout() -> None:
    s = Story()
    s.login(0)
    s.add("logout", 10, session_id=SID, user="alice")
    s.tx(10 + 4 / 60)  # 4 s later: within the default 5 s skew
    assert raised(s) == []


def test_logout_then_new_login_is_benign() -> None:
    s = Story()
    s.login(0)
    s.add("logout", 10, session_id=SID, user="alice")
    s.login(20, sid=SID2)
    s.tx(21, sid=SID2)
    assert raised(s) == []


def test_later_reuses_are_counted_not_realerted() -> None:
    s = Story()
    s.login(0)
    s.add("logout", 10, session_id=SID, user="alice")
    first = s.tx(12)
    s.tx(13)
    s.tx(14)
    alerts, _, engine = __import__("tests.helpers", fromlist=["replay"]).replay(s.lines())
    assert [(a.kind, a.event_id) for a in alerts] == [("reuse_after_logout", first)]
    state = engine.store.get_session(engine.fingerprint(SID))
    assert state is not None and state.raised["reuse_after_logout"] == 3


def test_activity_after_terminate() -> None:
    s = Story()
    s.login(0)
    s.add("terminate", 10, session_id=SID, actor="admin")
    e = s.tx(12)
    assert raised(s) == [("reuse_after_termination", e)]


def test_terminated_abandoned_session_is_benign() -> None:
    s = Story()
    s.login(0)
    s.tx(5)
    s.add("terminate", 40, session_id=SID, actor="admin")
    s.login(60, sid=SID2)
    assert raised(s) == []


def test_old_id_after_elevation_rotation() -> None:
    s = Story()
    s.login(0)
    s.add("elevate", 5, session_id=SID, new_session_id=SID2, user="alice")
    s.tx(6, sid=SID2)
    e = s.tx(7)
    assert raised(s) == [("reuse_after_rotation", e)]


def test_new_id_after_rotation_is_benign() -> None:
    s = Story()
    s.login(0)
    s.add("elevate", 5, session_id=SID, new_session_id=SID2, user="alice")
    for m in range(6, 60, 10):
        s.tx(m, sid=SID2)
    assert raised(s) == []


def test_guest_id_after_login_rotation() -> None:
    s = Story()
    s.tx(0, sid=SID, user=None, guest=True)
    s.login(1, sid=SID2, previous_session_id=SID)
    e = s.tx(2, sid=SID, user=None, guest=True)
    assert raised(s) == [("reuse_after_rotation", e)]
