"""Property tests: no input crashes the pipeline; order of independent sessions is irrelevant."""

from __future__ import annotations

import io
import json
import random

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.simulate import Simulation
from tests.helpers import replay

_TYPES = [
    "login",
    "transaction",
    "logout",
    "terminate",
    "lockout",
    "unlock",
    "deactivate",
    "activate",
    "elevate",
    "login_failed",
    "bogus",
]
_SIDS = ["9F3A1C7E5B2D48A6C0E1F7B3D95A2C4E", "4B7E0C2A9D1F83E65A0B7C4D2E9F1A38", "S1", ""]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)

event_like = st.fixed_dictionaries(
    {},
    optional={
        "event_id": st.text(max_size=5) | st.integers(),
        "ts": st.integers(-10, 5_000_000_000)
        | st.floats(allow_nan=False)
        | st.sampled_from(
            ["2026-11-22T10:00:00Z", "2026-11-22T10:00:00", "2026-02-30T00:00:00Z", "x"]
        ),
        "type": st.sampled_from(_TYPES),
        "session_id": st.sampled_from(_SIDS) | st.integers(),
        "new_session_id": st.sampled_from(_SIDS),
        "previous_session_id": st.sampled_from(_SIDS),
        "user": st.sampled_from(["alice", "bob", ""]) | st.none(),
        "ip": st.sampled_from(["10.0.0.1", "::1", "300.1.1.1", "185.1.2.3"]),
        "user_agent": st.text(max_size=30),
        "scheme": st.sampled_from(["http", "https", "gopher"]),
        "guest": st.booleans() | st.integers(),
        "remember_me": st.booleans(),
        "extra": json_values,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_arbitrary_bytes_never_crash(lines: list[bytes]) -> None:
    _, dead, _ = replay(lines)
    assert len(dead) <= len(lines)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(event_like | json_values, max_size=30))
def test_arbitrary_json_never_crashes(records: list[object]) -> None:
    lines = [json.dumps(r).encode() for r in records]  # json: big ints and all
    alerts, dead, _ = replay(lines)
    assert len(dead) <= len(lines)
    assert len({a.alert_id for a in alerts}) == len(alerts)


def _simulated(seed: int) -> list[bytes]:
    buf = io.BytesIO()
    Simulation(users=8, hours=24, seed=seed).write(buf)
    return buf.getvalue().splitlines()


@settings(max_examples=5, deadline=None)
@given(st.integers(0, 10_000))
def test_replay_is_deterministic(seed: int) -> None:
    lines = _simulated(seed % 7)
    a, _, _ = replay(lines)
    b, _, _ = replay(lines)
    assert a == b


def _partition_key(line: bytes) -> str:
    """The unit of independence: a user's events, or a guest session's."""
    ev = orjson.loads(line)
    return str(ev.get("user") or ev.get("session_id"))


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**32))
def test_interleaving_independent_users_keeps_the_alert_set(shuffle_seed: int) -> None:
    """Events of different users may arrive in any interleaving; each user's order is kept.

    Guest pre-login sessions belong to the user who logs in with them, so they move
    with that user; unknown-session grace is off so start-up time does not matter.
    """
    lines = _simulated(3)
    owner: dict[str, str] = {}
    for line in lines:
        ev = orjson.loads(line)
        if ev.get("previous_session_id"):
            owner[ev["previous_session_id"]] = ev["user"]
    groups: dict[str, list[bytes]] = {}
    for line in lines:
        ev = orjson.loads(line)
        key = owner.get(ev.get("session_id", ""), _partition_key(line))
        groups.setdefault(key, []).append(line)
    rng = random.Random(shuffle_seed)
    queues = [list(reversed(g)) for g in groups.values()]
    mixed: list[bytes] = []
    while queues:
        q = rng.choice(queues)
        mixed.append(q.pop())
        if not q:
            queues.remove(q)
    baseline, _, _ = replay(lines)
    shuffled, _, _ = replay(mixed)
    assert sorted(a.alert_id for a in shuffled) == sorted(a.alert_id for a in baseline)
