"""session_fixation: IDs that survive authentication or elevation."""

from __future__ import annotations

from tests.helpers import SID, SID2, SID3, Story, raised


def test_login_keeping_previous_id() -> None:
    s = Story()
    e = s.login(0, previous_session_id=SID)
    assert raised(s) == [("session_fixation", e)]


def test_login_on_known_guest_id() -> None:
    s = Story()
    s.tx(0, user=None, guest=True)
    e = s.login(1)
    assert raised(s) == [("session_fixation", e)]


def test_elevation_without_new_id() -> None:
    s = Story()
    s.login(0)
    e = s.add("elevate", 3, session_id=SID, user="alice")
    e2 = s.add("elevate", 4, session_id=SID, new_session_id=SID, user="alice")
    assert raised(s) == [("session_fixation", e)]
    assert e2  # counted, not re-alerted


def test_rotation_at_login_and_elevation_is_benign() -> None:
    s = Story()
    s.tx(0, sid=SID, user=None, guest=True)
    s.login(1, sid=SID2, previous_session_id=SID)
    s.add("elevate", 5, session_id=SID2, new_session_id=SID3, user="alice")
    s.tx(6, sid=SID3)
    assert raised(s) == []
