"""locked_out_activity and inactive_user_activity."""

from __future__ import annotations

from tests.helpers import SID, SID2, Story, raised


def test_old_session_used_after_lockout() -> None:
    s = Story()
    s.login(0)
    s.add("lockout", 5, user="alice", actor="admin")
    e = s.tx(6)
    assert raised(s) == [("locked_out_activity", e)]


def test_new_login_while_locked() -> None:
    s = Story()
    s.add("lockout", 0, user="alice", actor="admin")
    e = s.login(5)
    assert raised(s) == [("locked_out_activity", e)]


def test_session_killed_by_lockout_stays_dead_after_unlock() -> None:
    s = Story()
    s.login(0)
    s.add("lockout", 5, user="alice")
    s.add("unlock", 10, user="alice")
    e = s.tx(12)
    assert raised(s) == [("locked_out_activity", e)]


def test_login_after_unlock_is_benign() -> None:
    s = Story()
    s.login(0)
    s.add("logout", 2, session_id=SID, user="alice")
    s.add("lockout", 5, user="alice")
    s.add("unlock", 10, user="alice")
    s.login(12, sid=SID2)
    s.tx(13, sid=SID2)
    assert raised(s) == []


def test_lockout_of_another_user_does_not_touch_alice() -> None:
    s = Story()
    s.login(0)
    s.add("lockout", 5, user="bob")
    s.tx(6)
    assert raised(s) == []


def test_deactivated_user_is_inactive_not_locked() -> None:
    s = Story()
    s.login(0)
    s.add("deactivate", 5, user="alice")
    e1 = s.tx(6)
    e2 = s.login(7, sid=SID2)
    assert raised(s) == [("inactive_user_activity", e1), ("inactive_user_activity", e2)]


def test_activate_restores_new_logins() -> None:
    s = Story()
    s.add("deactivate", 0, user="alice")
    s.add("activate", 5, user="alice")
    s.login(6)
    assert raised(s) == []


def test_failed_login_while_locked_is_not_activity() -> None:
    s = Story()
    s.add("lockout", 0, user="alice")
    s.add("login_failed", 5, user="alice", ip="10.1.2.3")
    assert raised(s) == []
