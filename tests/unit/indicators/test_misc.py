"""insecure_transport, weak_session_id, unknown_session, concurrent_sessions."""

from __future__ import annotations

import itertools

import pytest

from detector.indicators.weak_id import estimate_bits
from tests.helpers import SID, SID2, SID3, Story, raised

LIMIT2 = {"detector": {"max_concurrent_sessions": 2}}


def test_http_on_authenticated_session() -> None:
    s = Story()
    s.login(0)
    e = s.tx(1, scheme="http")
    assert raised(s) == [("insecure_transport", e)]


def test_http_on_guest_session_is_not_flagged() -> None:
    s = Story()
    s.tx(0, user=None, guest=True, scheme="http")
    assert raised(s) == []


@pytest.mark.parametrize(
    "sid",
    [
        "12345",
        "SESSION000123",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "0123456789abcdef0123456789abcdef",
    ],
)
def test_weak_ids(sid: str) -> None:
    assert estimate_bits(sid) < 64
    s = Story()
    e = s.login(0, sid=sid)
    s.tx(1, sid=sid)
    assert raised(s) == [("weak_session_id", e)]


@pytest.mark.parametrize(
    "sid", [SID, SID2, "550e8400-e29b-41d4-a716-446655440000", "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA"]
)
def test_strong_ids(sid: str) -> None:
    s = Story()
    s.login(0, sid=sid)
    assert raised(s) == []


def test_weak_id_created_by_rotation() -> None:
    s = Story()
    s.login(0)
    e = s.add("elevate", 1, session_id=SID, new_session_id="S0000001", user="alice")
    assert raised(s) == [("weak_session_id", e)]


def test_transaction_on_never_seen_id() -> None:
    s = Story()
    e = s.tx(0)
    assert raised(s) == [("unknown_session", e)]


def test_unknown_session_grace_after_start() -> None:
    cfg = {"detector": {"unknown_session_grace_minutes": 10}}
    s = Story()
    s.tx(0)
    s.tx(5, sid=SID2)
    e = s.tx(11, sid=SID3)
    assert raised(s, cfg) == [("unknown_session", e)]


def test_rotated_ids_are_known() -> None:
    s = Story()
    s.tx(0, sid=SID, user=None, guest=True)
    s.login(1, sid=SID2, previous_session_id=SID)
    s.add("elevate", 2, session_id=SID2, new_session_id=SID3, user="alice")
    s.tx(3, sid=SID3)
    assert raised(s) == []


def test_login_above_concurrency_limit() -> None:
    s = Story()
    s.login(0, sid=SID)
    s.login(1, sid=SID2)
    e = s.login(2, sid=SID3)
    assert raised(s, LIMIT2) == [("concurrent_sessions", e)]


def test_ended_and_idle_sessions_do_not_count() -> None:
    s = Story()
    s.login(0, sid=SID)
    s.add("logout", 1, session_id=SID, user="alice")
    s.login(2, sid=SID2)  # idles out: no activity for more than 30 minutes
    s.login(40, sid=SID3)
    s.login(41, sid="7D1E9A3C5B0F2468ACE13579BDF02468")
    assert raised(s, LIMIT2) == []


def test_concurrency_off_by_default() -> None:
    s = Story()
    for i, sid in enumerate([SID, SID2, SID3]):
        s.login(i, sid=sid)
    assert raised(s) == []


def _reference_bits(sid: str) -> float:
    """The estimate as the module docstring defines it, written plainly."""
    import math
    from collections import Counter

    from detector.indicators.weak_id import _alphabet

    n = len(sid)
    if n == 0:
        return 0.0
    per_char = math.log2(_alphabet(set(sid)))
    near = sum(1 for a, b in itertools.pairwise(sid) if abs(ord(b) - ord(a)) <= 1)
    bits = per_char * (n - near) + math.log2(3) * near
    shannon = n * math.log2(n) - sum(c * math.log2(c) for c in Counter(sid).values() if c > 1)
    return min(bits, shannon)


@pytest.mark.parametrize(
    "sid", [SID, "12345", "a" * 255, "a" * 256, "ab" * 200, SID * 9, "é😀\udc80x" * 70]
)
def test_estimate_matches_its_definition(sid: str) -> None:
    assert estimate_bits(sid) == pytest.approx(_reference_bits(sid), rel=1e-12)
