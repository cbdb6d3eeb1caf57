"""The compiled routine path (native/) changes speed only: output and state are the
Python path's, line for line, whatever the input."""

from __future__ import annotations

import copy
import functools
import io
import ipaddress
import math
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.anomaly.offline import OfflineModel, load
from detector.anomaly.scoring import Scorer
from detector.engine import FROM_POLICY, Engine, _FromPolicy
from detector.fingerprint import Fingerprinter
from detector.netaddr import IpLadder
from detector.replay import JsonLinesWriter, Replayer
from detector.simulate import SIM_CONFIG, Simulation
from detector.store import MemoryStore
from tests.helpers import CHROME, CHROME_NEXT, KEY, SID, SID2, T0, policy

#: Where `make install` finds cargo (the Makefile's CARGO): there it builds native/.
HAS_RUST = bool(shutil.which("cargo")) or (Path.home() / ".cargo" / "bin" / "cargo").exists()
if not HAS_RUST:  # no Rust here: replay runs on the Python path alone
    pytest.importorskip("sessionwatch_native")


def test_extension_is_built_where_rust_is() -> None:
    """`make install` builds it whenever cargo exists, so CI measures the real thing."""
    if HAS_RUST:
        import sessionwatch_native  # noqa: F401


def _replay(
    lines: list[bytes], cfg: dict[str, Any], mode: str
) -> tuple[bytes, bytes, bytes, Replayer]:
    """Alerts, dead letters and final state of one replay; ``mode`` is native, python or
    full (no routine shortcut at all)."""
    out, dead = io.BytesIO(), io.BytesIO()
    alerts, dead_letters = JsonLinesWriter(out), JsonLinesWriter(dead)
    engine = Engine(policy(cfg), Fingerprinter(KEY), behaviour=_offline(cfg))
    engine.routine_shortcut = mode != "full"
    replayer = Replayer(engine, alerts, dead_letters, native=mode == "native")
    assert (replayer._fast is not None) == (mode == "native")
    replayer.feed(lines, "test")
    alerts.flush()
    dead_letters.flush()
    store = engine.store
    state = msgspec.json.encode(
        [sorted(store.sessions.items()), sorted(store.users.items()), engine.watermark]  # type: ignore[attr-defined]
    )
    return out.getvalue(), dead.getvalue(), state, replayer


@functools.cache
def _forest(path: str) -> OfflineModel:
    return load(path)


def _offline(cfg: dict[str, Any]) -> Scorer | _FromPolicy:
    """The config's offline model, read once per run (a load costs ~0.5 s; properties
    replay hundreds of times), with the config's threshold; other configs as usual."""
    settings = policy(cfg).behaviour
    if settings.model != "offline":
        return FROM_POLICY
    model = copy.copy(_forest(str(settings.path)))
    if settings.threshold is not None:
        model.threshold = settings.threshold
    return Scorer([model], min_user_sessions=settings.min_user_sessions)


def _same(lines: list[bytes], cfg: dict[str, Any]) -> tuple[bytes, Replayer]:
    fast = _replay(lines, cfg, "native")
    for mode in ("python", "full"):
        other = _replay(lines, cfg, mode)
        assert fast[:3] == other[:3], mode
        assert fast[3].metrics.events == other[3].metrics.events
        assert fast[3].metrics.lag.counts == other[3].metrics.lag.counts
    return fast[0], fast[3]


TIGHT = {
    **SIM_CONFIG,
    "policy": {
        **SIM_CONFIG["policy"],
        "glide.ui.session_timeout": 12,
        "glide.guest.session_timeout": 5,
    },
    "detector": {
        **SIM_CONFIG["detector"],
        "ip_prefix_v4": 28,
        "trust_same_asn": False,
        "allow_cidrs": ["10.0.0.0/12"],
    },
}


def ahead_of_now(lines: list[bytes]) -> tuple[list[bytes], list[int]]:
    """``lines`` with a plain login (a new session) dated in 2099 a third of the way in and
    a transaction an hour from now half of the way in (the host's clock), and where they
    are (1-based)."""
    out = list(lines)
    for share, kind, ts in (
        (3, b'"login"', "2099-01-01T00:00:00Z"),
        (2, b'"transaction"', time.time() + 3600),
    ):
        i = len(out) // share
        src = next(orjson.loads(x) for x in out[i:] if kind in x)
        sid = "9F3B47E6A0D4C8B2F1E7A93C5D2E8A1C" if kind == b'"login"' else src["session_id"]
        ahead = {**src, "event_id": f"ahead-{share}", "ts": ts, "session_id": sid}
        out.insert(i, orjson.dumps(ahead))
    return out, [n for n, x in enumerate(out, 1) if b'"ahead-' in x]


@pytest.mark.parametrize("mode", ["native", "python", "full"])
def test_events_dated_ahead_of_the_host_s_clock_are_refused_and_change_nothing(
    mode: str,
) -> None:
    """One event dated years ahead moved event time there and every session expired (on
    this day: 43 unknown_session and 5 idle_timeout_exceeded alerts after it, 2
    lifespan_exceeded lost). Refused as a bad time, it leaves the alerts and the state
    exactly those of the day without it, on every path."""
    buf = io.BytesIO()
    Simulation(users=60, hours=24, seed=5).write(buf)
    lines = buf.getvalue().splitlines()
    with_them, at = ahead_of_now(lines)
    alerts, dead, state, _ = _replay(with_them, SIM_CONFIG, mode)
    clean = _replay(lines, SIM_CONFIG, mode)
    assert (alerts, state) == (clean[0], clean[2])
    refused = [orjson.loads(x) for x in dead.splitlines()]
    assert [(d["offset"], d["reason"].split(":")[0]) for d in refused] == [
        (n, "bad_time") for n in at
    ]
    assert all("ahead of this host's clock" in d["reason"] for d in refused)


@pytest.mark.parametrize("cfg", [SIM_CONFIG, TIGHT], ids=["simulation policy", "tight policy"])
def test_simulated_days_are_identical_on_both_paths(cfg: dict[str, Any]) -> None:
    buf = io.BytesIO()
    Simulation(users=400, hours=8, seed=31).write(buf)
    lines = buf.getvalue().splitlines(keepends=True)
    alerts, replayer = _same(lines, cfg)
    assert alerts.count(b"\n") > 20  # real alerts are compared
    # Most lines went the compiled way (else this compares the Python path with itself).
    assert replayer._fast is not None
    assert replayer._fast.applied > len(lines) // 2


def _tx(n: int, **fields: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "event_id": f"t{n}",
        "ts": T0 + 1 + n / 1000,  # within the first sweep interval: a sweep is Python's
        "type": "transaction",
        "session_id": SID,
        "user": "alice",
        "ip": "10.1.2.3",
        "user_agent": CHROME,
    }
    ev.update(fields)
    return ev


LOGIN = orjson.dumps(
    {
        "event_id": "l1",
        "ts": T0,
        "type": "login",
        "session_id": SID,
        "user": "alice",
        "ip": "10.1.2.3",
        "user_agent": CHROME,
    }
)

# Values for each field, valid or not: the compiled path must take a line exactly when
# the Python path would take it as routine, and leave everything else alone.
_ANY = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=8)
)
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "ts": st.one_of(
        st.floats(T0, T0 + 40_000),
        st.floats(T0, T0 + 30),
        st.integers(int(T0), int(T0) + 40_000),
        st.sampled_from(
            [
                "2026-11-22T08:00:30Z",
                "2026-11-22T08:00:30.5Z",
                "2026-11-22T08:00:30.123456Z",
                "2026-11-22T08:00:30.1234567Z",
                "2026-11-22T09:00:30+01:00",
                "2026-11-22T07:00:30-01:00",
                "2026-11-22T08:00:30",
                "2026-11-22 08:00:30Z",
                "2026-02-30T08:00:30Z",
                "2026-11-22T24:00:00Z",
                "2026-11-22T08:00:60Z",
                "2026-11-22t08:00:30z",
                "+2026-11-22T08:00:30Z",
            ]
        ),
        _ANY,
    ),
    "ip": st.one_of(
        st.sampled_from(
            [
                "10.1.2.3",
                "10.1.2.77",
                "10.1.3.9",
                "10.9.9.9",
                "203.0.113.9",
                "010.1.2.3",
                "10.1.2",
                "::ffff:10.1.2.3",
                "2001:db8::1",
                "2001:DB8::1",
                "10.1.2.3 ",
                "",
            ]
        ),
        _ANY,
    ),
    "user_agent": st.one_of(st.sampled_from([CHROME, CHROME_NEXT, "curl/8.5.0", ""]), _ANY),
    "scheme": st.one_of(st.sampled_from(["https", "http", "HTTPS"]), _ANY),
    "session_id": st.one_of(st.sampled_from([SID, "", "sw-fp:abc", "OTHER"]), _ANY),
    "type": st.sampled_from(["transaction", "login", "logout", "bogus"]),
    "event_id": st.one_of(st.sampled_from(["", "x"]), _ANY),
    "node": st.one_of(st.sampled_from(["node-a", "node-b"]), _ANY),
    "guest": _ANY,
    "remember_me": _ANY,
    "asn": st.one_of(st.integers(-(2**70), 2**70), _ANY),
    "response_bytes": _ANY,
    "geo_lat": _ANY,
    "url": _ANY,
    "~sessionwatch.epoch": _ANY,
    "user": st.one_of(st.sampled_from(["alice", "bob", ""]), _ANY),
}


@st.composite
def transactions(draw: st.DrawFn) -> bytes:
    n = draw(st.integers(0, 10_000))
    changes = draw(st.dictionaries(st.sampled_from(sorted(FIELDS)), st.none(), max_size=4))
    ev = _tx(n, **{k: draw(FIELDS[k]) for k in changes})
    if draw(st.integers(0, 5)) == 0:  # now and then a field goes missing
        del ev[draw(st.sampled_from(sorted(ev)))]
    line = msgspec.json.encode(ev)  # big integers too
    mangle = draw(st.sampled_from(["none"] * 6 + ["dup", "escape", "trailing", "cut"]))
    if mangle == "dup":
        line = line[:-1] + b',"ip":"10.1.2.3"}'
    elif mangle == "escape":
        line = line.replace(b'"alice"', b'"\\u0061lice"')
    elif mangle == "trailing":
        line += b" x"
    elif mangle == "cut":
        line = line[: len(line) // 2]
    return line


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(transactions(), min_size=1, max_size=12))
def test_any_line_is_applied_exactly_as_the_python_path_would(body: list[bytes]) -> None:
    lines = [LOGIN, *body, orjson.dumps(_tx(20_000, ip="10.1.2.200"))]
    _same(lines, SIM_CONFIG)
    _same(lines, TIGHT)


SIDS = [SID, SID2, "5D8E2F1A9C3B7E4D6A0F2C8B1E9D3A7F", "AB12CD34EF56AB78CD90EF12AB34CD56", "aaaa"]


@st.composite
def logins(draw: st.DrawFn) -> bytes:
    """A login, often plain, sometimes not: a seen or weak ID, a rotation away from
    another (or the same) ID, http, a user with a lock-out, fields missing or mistyped."""
    n = draw(st.integers(0, 10_000))
    ev: dict[str, Any] = {
        "event_id": f"l{n}",
        "ts": T0 + 1 + n / 100,
        "type": "login",
        "session_id": draw(st.sampled_from(SIDS)),
        "user": draw(st.sampled_from(["alice", "bob", "carol"])),
        "ip": draw(st.sampled_from(["10.1.2.3", "10.7.7.7", "2001:db8::1"])),
        "user_agent": draw(st.sampled_from([CHROME, CHROME_NEXT])),
    }
    for key in draw(st.sets(st.sampled_from([*sorted(FIELDS), "previous_session_id"]), max_size=2)):
        ev[key] = draw(
            st.sampled_from([*SIDS, None, ""]) if key == "previous_session_id" else FIELDS[key]
        )
    return msgspec.json.encode(ev)


LOCKOUT = orjson.dumps({"event_id": "k1", "ts": T0 + 50, "type": "lockout", "user": "carol"})
#: At most two live sessions per user, so logins cross the limit.
TWO_SESSIONS = {
    **SIM_CONFIG,
    "detector": {**SIM_CONFIG["detector"], "max_concurrent_sessions": 2},
}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(logins(), transactions()), min_size=1, max_size=14))
def test_any_login_is_applied_exactly_as_the_python_path_would(body: list[bytes]) -> None:
    """Plain logins are the compiled path's too: it must take one exactly when no
    indicator could fire, and make the same session, user and expiry filing."""
    lines = [LOGIN, LOCKOUT, *body, orjson.dumps(_tx(20_000, ip="10.1.2.200"))]
    _same(lines, TWO_SESSIONS)
    _same(lines, TIGHT)


def test_plain_logins_are_applied_natively() -> None:
    """New IDs of new and known users, a rotation away from a guest ID, remember-me."""
    # Seconds apart: a line that makes a sweep due (one a minute) is Python's.
    lines = [
        LOGIN,
        _at(0.1, SID2, 1, "login"),
        orjson.dumps(
            {
                **orjson.loads(_at(0.2, SID2, 2, "login")),
                "session_id": SIDS[2],
                "previous_session_id": SID2,
                "remember_me": True,
            }
        ),
        _at(0.3, SIDS[3], 3, "login"),
        _at(0.4, SIDS[3], 4),
    ]
    _, replayer = _same(lines, TWO_SESSIONS)
    assert replayer._fast is not None and replayer._fast.applied == len(lines) - 1


def test_logins_that_could_alert_are_left_to_python() -> None:
    """Over http, a weak ID, a kept ID, past the limit: each alerts, as on Python."""
    plain = orjson.loads(_at(1, SID2, 1, "login"))
    lines = [
        LOGIN,
        orjson.dumps({**plain, "scheme": "http"}),
        orjson.dumps({**plain, "event_id": "w", "session_id": "aaaa"}),
        orjson.dumps(
            {**plain, "event_id": "f", "session_id": SIDS[2], "previous_session_id": SIDS[2]}
        ),
        orjson.dumps({**plain, "event_id": "c", "session_id": SIDS[3]}),
    ]
    alerts, _ = _same(lines, TWO_SESSIONS)
    kinds = {orjson.loads(a)["kind"] for a in alerts.splitlines()}
    assert kinds == {
        "concurrent_sessions",
        "insecure_transport",
        "session_fixation",
        "weak_session_id",
    }


def test_a_login_rotating_away_a_session_ends_its_compiled_copy() -> None:
    """The rotated-away ID had a request in the same compiled run: its copy must go,
    or the next request on it passes as routine instead of reuse_after_rotation.
    (Within the first event-minute: a sweep would also refresh the copies.)"""
    lines = [
        LOGIN,
        _at(0.2, SID, 1),
        orjson.dumps({**orjson.loads(_at(0.4, SID2, 2, "login")), "previous_session_id": SID}),
        _at(0.8, SID, 3),
    ]
    alerts, replayer = _same(lines, SIM_CONFIG)
    assert [orjson.loads(a)["kind"] for a in alerts.splitlines()] == ["reuse_after_rotation"]
    assert replayer._fast is not None and replayer._fast.applied == 2


def _account(kind: str, minutes: float, user: str = "alice") -> bytes:
    return orjson.dumps(
        {"event_id": f"{kind}{minutes}", "ts": T0 + minutes * 60, "type": kind, "user": user}
    )


@pytest.mark.parametrize(("block", "lift"), [("lockout", "unlock"), ("deactivate", "activate")])
def test_a_user_with_a_lock_out_history_is_routine_where_no_account_check_fires(
    block: str, lift: str
) -> None:
    """After an unlock, a session started after the lock-out is routine (compiled); one
    alive at the lock-out stays dead (alerts); a request within the clock skew of the
    lock-out is not judged; while blocked every request alerts."""
    other, third = "6E1F0A9B8C7D2E3F4A5B6C7D8E9F0A1B", "1B2C3D4E5F60718293A4B5C6D7E8F901"
    lines = [
        LOGIN,
        _at(1, SID, 1),
        _account(block, 2),
        orjson.dumps({**orjson.loads(_at(2, SID, 2)), "ts": T0 + 122}),  # within the skew
        _at(3, SID, 3),  # blocked: alerts
        _account(lift, 4),
        orjson.dumps({**orjson.loads(_at(5, SID2, 5, "login")), "user": "alice"}),
        # Within the minute after the login (a line that makes a sweep due is Python's).
        orjson.dumps({**orjson.loads(_at(5.3, SID2, 6)), "user": "alice"}),  # routine
        orjson.dumps({**orjson.loads(_at(5.6, SID2, 7)), "user": "alice"}),  # routine
        _at(7, SID, 7),  # alive at the lock-out: dead for good
        orjson.dumps({**orjson.loads(_at(8, other, 8, "login")), "user": "alice"}),
        _account(block, 9),
        orjson.dumps({**orjson.loads(_at(10, other, 9)), "user": "alice"}),  # blocked again
        # A session started while blocked: its login alerts, and so (counted) its request.
        orjson.dumps({**orjson.loads(_at(10.5, third, 10, "login")), "user": "alice"}),
        orjson.dumps({**orjson.loads(_at(10.8, third, 11)), "user": "alice"}),
    ]
    alerts, replayer = _same(lines, SIM_CONFIG)
    kinds = [orjson.loads(a)["kind"] for a in alerts.splitlines()]
    name = "locked_out_activity" if block == "lockout" else "inactive_user_activity"
    assert kinds == [name, name, name]  # once per session; SID's second is counted
    store = replayer.engine.store
    for sid in (SID, third):
        assert store.sessions[replayer.engine.fingerprint(sid)].raised[name] == 2  # type: ignore[attr-defined]
    assert replayer._fast is not None and replayer._fast.applied >= 3


def test_routine_lines_of_every_shape_are_applied_natively() -> None:
    """Numbers and RFC 3339 strings, escapes, upgrades, moves inside the prefix, nodes."""
    shapes = [
        _tx(1),
        _tx(2, ts="2026-11-22T08:00:10.25Z"),
        _tx(3, ts="2026-11-22T10:00:11+02:00"),
        _tx(4, ip="10.1.2.77", node="node-b", url="/x.do", extra={"k": [1, 2]}),
        _tx(5, user_agent=CHROME_NEXT, scheme="https", asn=64500, response_bytes=10),
        _tx(6, user=None, guest=False, remember_me=False),
    ]
    lines = [
        LOGIN,
        *map(orjson.dumps, shapes),
        orjson.dumps(_tx(7)).replace(b"alice", b"\\u0061lice"),
    ]
    _, replayer = _same(lines, SIM_CONFIG)
    assert replayer._fast is not None and replayer._fast.applied == len(lines) - 1


def test_a_moved_session_counts_its_deduplicated_ip_change() -> None:
    """After ip_change alerted, further requests from the new place only count it."""
    lines = [LOGIN] + [orjson.dumps(_tx(n, ip="203.0.113.9")) for n in range(1, 6)]
    alerts, replayer = _same(lines, SIM_CONFIG)
    assert alerts.count(b'"kind":"ip_change"') == 1
    engine = replayer.engine
    (s,) = engine.store.sessions.values()  # type: ignore[attr-defined]
    assert s.raised["ip_change"] == 5


def _at(minutes: float, sid: str, n: int, kind: str = "transaction") -> bytes:
    return orjson.dumps(
        {
            "event_id": f"{sid[:2]}{n}",
            "ts": T0 + minutes * 60,
            "type": kind,
            "session_id": sid,
            "user": "alice" if sid == SID else "bob",
            "ip": "10.1.2.3",
            "user_agent": CHROME,
        }
    )


#: Idle timeout 30 min, state kept 6 min past it: expiry is filed at login + 36 min.
SHORT_RETENTION = {
    **SIM_CONFIG,
    "detector": {**SIM_CONFIG["detector"], "state_retention_hours": 0.1},
}


def test_a_sweep_sees_the_requests_the_compiled_path_holds_back() -> None:
    """The compiled path keeps its own copy of what it reads of a session and writes
    its updates back only when something is about to read the session. A sweep (a line
    that makes one due is Python's) reads the sessions due: it must see their latest
    requests, or it drops live sessions whose filed expiry has passed. A's only update
    since its login (filed to expire at 36 min) is a compiled request at 29.5 min."""
    lines = [
        _at(0, SID, 0, "login"),  # Python's: starts the engine's clock
        _at(0, SID2, 0, "login"),
        _at(20, SID2, 1),  # a sweep comes due: Python's
        _at(29, SID2, 2),  # and again
        _at(29.5, SID, 1),  # compiled: held back
        _at(36.5, SID2, 3),  # the sweep at 36.5 min finds A due: it must see 29.5
        _at(37, SID, 2),  # A is alive: routine
        _at(37.2, SID2, 4),
    ]
    alerts, replayer = _same(lines, SHORT_RETENTION)
    assert alerts == b""
    assert replayer._fast is not None and replayer._fast.applied == 4
    assert len(replayer.engine.store.sessions) == 2  # type: ignore[attr-defined]


def test_held_back_changes_are_written_before_a_read_or_a_census() -> None:
    """The store's side of the bargain (MemoryStore.defer_writes): a session handed out
    is up to date, and a census sees every session up to date."""
    engine = Engine(policy(SIM_CONFIG), Fingerprinter(KEY))
    replayer = Replayer(engine, JsonLinesWriter(io.BytesIO()), JsonLinesWriter(io.BytesIO()))
    replayer.feed([_at(0, SID, 0, "login"), _at(0, SID2, 0, "login")], "test")
    fast, store = replayer._fast, engine.store
    assert fast is not None and isinstance(store, MemoryStore)
    fp, fp2 = engine.fingerprint(SID), engine.fingerprint(SID2)
    assert fast.run([_at(0.5, SID, 1), _at(0.6, SID2, 1)], 0, T0) == 2
    assert store.sessions[fp].last == store.sessions[fp2].last == T0  # held back
    s = store.get_session(fp)
    assert s is not None and s.last == T0 + 30
    assert store.sessions[fp2].last == T0
    engine.census()
    assert store.sessions[fp2].last == T0 + 36


def test_what_the_python_path_writes_replaces_the_compiled_copy() -> None:
    """A logout, a lock-out and an unlock run on the Python path between compiled
    requests: the next requests must see them (reuse and lock-out alerts)."""
    lines = [
        _at(0, SID, 0, "login"),
        _at(0, SID2, 0, "login"),
        _at(1, SID, 1),
        _at(1, SID2, 1),
        _at(2, SID, 2, "logout"),
        _at(3, SID2, 2),
        orjson.dumps({"event_id": "k1", "ts": T0 + 240, "type": "lockout", "user": "bob"}),
        _at(5, SID2, 3),  # locked_out_activity
        _at(6, SID, 3),  # reuse_after_logout (past the 2-minute grace)
    ]
    alerts, _ = _same(lines, SIM_CONFIG)
    kinds = [orjson.loads(a)["kind"] for a in alerts.splitlines()]
    assert "reuse_after_logout" in kinds and "locked_out_activity" in kinds


def test_fingerprints_and_times_match_python() -> None:
    from sessionwatch_native import FastPath

    for key in (KEY, b"k" * 200):  # a long secret is hashed down first
        engine = Engine(policy(SIM_CONFIG), Fingerprinter(key))
        fast = Replayer(engine, lambda _a: None, lambda _d: None)._fast
        assert isinstance(fast, FastPath)
        for sid in (SID, "é-ü-日本", "a" * 500, "x"):
            assert fast.fingerprint_of(sid) == engine.fingerprint(sid)
    for text in (
        "2026-11-22T08:01:00Z",
        "2026-11-22T08:01:00.657Z",
        "1999-12-31T23:59:59.999999-13:30",
    ):
        assert FastPath.parse_time(text) == _python_time(text)
    assert FastPath.parse_time("2026-11-22T08:01:00") is None


@given(st.datetimes(timezones=st.timezones()))
def test_any_plain_rfc3339_time_is_read_as_python_reads_it(when: datetime) -> None:
    from sessionwatch_native import FastPath

    text = when.isoformat().replace("+00:00", "Z")
    got = FastPath.parse_time(text)
    if got is not None:  # the compiled path may decline a shape; never misread one
        assert got == _python_time(text)


def _day(users: int, seed: int) -> list[bytes]:
    buf = io.BytesIO()
    Simulation(users=users, hours=8, seed=seed).write(buf)
    return buf.getvalue().splitlines()


def _reads(line: bytes | str) -> tuple[str | None, str | None]:
    """A line's fields as the compiled path's own scan reads them, and as serde_json does."""
    from sessionwatch_native import FastPath

    text = line.decode() if isinstance(line, bytes) else line
    return FastPath.read_line(text, True), FastPath.read_line(text, False)


def test_the_scan_reads_every_line_of_the_day_as_serde_json_does() -> None:
    """The compiled path reads a line with its own scan first (native/src/scan.rs) and
    asks serde_json only when the scan is not sure: the simulated day's lines (string and
    numeric times, optional fields, integers) are all the scan's, read the same."""
    lines = _day(2000, 3)
    assert len(lines) > 10_000
    for line in lines:
        fast, serde = _reads(line)
        assert fast is not None and fast == serde, line


@pytest.mark.parametrize(
    "line",
    [
        ' \t{"event_id":"e","ts":1,"type":"login"}\r\n',  # whitespace around and inside
        '{ "event_id" : "e" , "ts" : 0.1 , "type" : "x" , "other" : [1] }',
        '{"event_id":"e","ts":"t","type":"x","user":"\\u0061lice"}',  # an escape
        '{"event_id":"e","ts":"t","type":"x","ip":"1","ip":"2"}',  # a repeated key
        '{"event_id":"e","ts":"t","type":"x","ip":null,"ip":"2"}',
        '{"event_id":"e","ts":"t","type":"x","extra":1,"extra":2}',  # unknown: allowed
        '{"event_id":"e","ts":1e9,"type":"x"}',
        '{"event_id":"e","ts":-0,"type":"x"}',
        '{"event_id":"e","ts":-1.5,"type":"x"}',
        '{"event_id":"e","ts":1234567890123456789012,"type":"x"}',
        '{"event_id":"e","ts":01,"type":"x"}',
        '{"event_id":"e","ts":1.,"type":"x"}',
        '{"event_id":"e","ts":"t","type":"x","asn":-0}',
        '{"event_id":"e","ts":"t","type":"x","asn":-12}',
        '{"event_id":"e","ts":"t","type":"x","asn":1.0}',
        '{"event_id":"e","ts":"t","type":"x","asn":99999999999999999999}',
        '{"event_id":"e","ts":"t","type":"x","response_bytes":-1}',
        '{"event_id":"e","ts":"t","type":"x","response_bytes":null}',
        '{"event_id":"e","ts":"t","type":"x","scheme":null}',
        '{"event_id":"e","ts":"t","type":"x","scheme":"ftp"}',
        '{"event_id":"e","ts":"t","type":"x","scheme":"http","guest":true}',
        '{"event_id":"e","ts":"t","type":"x","guest":null}',
        '{"event_id":"e","ts":"t","type":"x","remember_me":"yes"}',
        '{"event_id":"e","ts":"t","type":"x","geo_lat":1.5}',
        '{"event_id":"e","ts":"t","type":"x","~sessionwatch.epoch":1}',
        '{"event_id":"e","ts":"t","type":"x","own_epoch":1,"kind":"y"}',
        '{"event_id":"e","ts":"t","type":"x","big":1e999}',
        '{"event_id":"e","ts":"t","type":"x","big":123456789012345678901234567890}',
        '{"event_id":"e","ts":"t","type":"x","user":"a\x01b"}',  # a control character
        '{"event_id":"e","ts":"t","type":"x","user":"caf\u00e9 \u65e5\u672c"}',
        '{"event_id":"e","ts":"t","type":"x",}',
        '{"event_id":"e","ts":"t","type":"x"} x',
        '{"event_id":"e","ts":"t","type":"x"}{}',
        '{"event_id":"e","ts":"t"}',
        '{"event_id":null,"ts":"t","type":"x"}',
        '["e", "t", "x"]',  # serde_json reads a struct from an array too: its decision
        "{}",
        "",
        '{"event_id":"e","ts":"t","type":"x","user":"unterminated}',
    ],
)
def test_the_scan_reads_a_line_as_serde_json_does_or_declines_it(line: str) -> None:
    """Accepted, it is read as serde_json reads it; declined, serde_json decides."""
    fast, serde = _reads(line)
    if fast is not None:
        assert fast == serde


def test_the_scan_takes_the_common_shapes_itself() -> None:
    """What it declines is rare in real logs; what real logs hold, it reads."""
    taken = [
        ' \t{"event_id":"e","ts":1,"type":"login"}\r\n',
        '{ "event_id" : "e" , "ts" : 0.1 , "type" : "x" , "other" : "y" }',
        '{"event_id":"e","ts":"t","type":"x","extra":1,"extra":-2.5,"n":null,"b":false}',
        '{"event_id":"e","ts":"t","type":"x","asn":-12,"response_bytes":0,"guest":true}',
        '{"event_id":"e","ts":"t","type":"x","user":"caf\u00e9 \u65e5\u672c"}',
    ]
    for line in taken:
        fast, serde = _reads(line)
        assert fast is not None and fast == serde, line
    declined = [
        '{"event_id":"e","ts":"t","type":"x","ip":"1","ip":"2"}',
        '{"event_id":"e","ts":"t","type":"x","user":"\\u0061lice"}',
        '{"event_id":"e","ts":1e9,"type":"x"}',
        '{"event_id":"e","ts":"t","type":"x","asn":-0}',
    ]
    for line in declined:
        fast, serde = _reads(line)
        assert fast is None, line
    assert _reads(declined[1])[1] is not None  # serde_json then reads the escape


@given(st.floats(0, 4.1e9), st.integers(0, 25))
def test_the_scan_reads_a_numeric_time_as_serde_json_does(ts: float, places: int) -> None:
    for text in (repr(ts), f"{ts:.{places}f}", f"{ts:.{places}f}".rstrip("0") + "1"):
        line = f'{{"event_id":"e","ts":{text},"type":"transaction"}}'
        fast, serde = _reads(line)
        if fast is not None:
            assert fast == serde, line


_DAY = _day(20, 5)[:400]
_JSON_BYTES = list(' \t\n"\\{}[],:.-+eE019antrufls/\x00\x1f\x7f\xe9')


@settings(max_examples=600, deadline=None)
@given(
    st.sampled_from(_DAY),
    st.lists(
        st.tuples(st.integers(0, 10_000), st.sampled_from(["insert", "delete", "replace"])),
        min_size=1,
        max_size=3,
    ),
    st.lists(st.sampled_from(_JSON_BYTES), min_size=3, max_size=3),
)
def test_the_scan_never_reads_a_mangled_line_otherwise_than_serde_json(
    line: bytes, edits: list[tuple[int, str]], chars: list[str]
) -> None:
    text = line.decode()
    for (at, how), char in zip(edits, chars, strict=False):
        at %= len(text) + 1
        if how == "insert":
            text = text[:at] + char + text[at:]
        elif how == "delete":
            text = text[:at] + text[at + 1 :]
        else:
            text = text[:at] + char + text[at + 1 :]
    fast, serde = _reads(text)
    if fast is not None:
        assert fast == serde, text


def _python_time(text: str) -> float:
    """What detector.events.decode makes of a time stamp string."""
    return msgspec.json.decode(orjson.dumps(text), type=datetime).timestamp()


@given(
    st.one_of(
        st.text(st.sampled_from("/?#-.0123456789abcdefABCDEFxyz_"), max_size=60),
        st.text(max_size=30),
    )
)
def test_compiled_path_shapes_are_python_s(url: str) -> None:
    from sessionwatch_native import FastPath

    from detector.anomaly.features import _path_shape

    got = FastPath.path_shape(url)
    if got is not None:  # None: not ASCII, the Python function decides
        assert got == _path_shape(url)
    else:
        assert not url.isascii()


ID_ALPHABETS = st.sampled_from(
    ["0123456789ABCDEF", "0123456789abcdef", "0123456789abcdefABCDEF", "0123", "abc-_.~"]
)


@given(
    st.one_of(
        st.text(st.characters(max_codepoint=127), max_size=300),
        ID_ALPHABETS.flatmap(lambda a: st.text(st.sampled_from(a), min_size=1, max_size=64)),
    )
)
def test_compiled_entropy_is_the_python_estimate_bit_for_bit(sid: str) -> None:
    from detector.indicators.weak_id import _COMPILED, estimate_bits_py

    assert _COMPILED is not None
    got = _COMPILED(sid)
    if got is not None:  # None: not ASCII, empty or long; the Python code decides
        assert got == estimate_bits_py(sid)
    else:
        assert not sid or not sid.isascii() or len(sid) >= 256


@settings(max_examples=300)
@given(
    st.one_of(
        st.ip_addresses(v=4).map(str),
        st.text(st.sampled_from("0123456789."), max_size=16),
        st.text(st.sampled_from("0123456789abcdefABCDEF:."), max_size=40),
        st.ip_addresses(v=6).map(str),
    )
)
def test_an_address_is_taken_natively_only_where_python_takes_it(ip: str) -> None:
    """A new address on a live session: applied natively only if inet_pton accepts it,
    and then with the ladder's answer (same /24 -> routine, else ip_change)."""
    lines = [LOGIN, orjson.dumps(_tx(1, ip=ip)), orjson.dumps(_tx(2, ip=ip))]
    _same(lines, SIM_CONFIG)


def test_a_stale_build_is_refused_and_replay_runs_on_python(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import sessionwatch_native

    monkeypatch.setattr(sessionwatch_native, "ABI", 0)
    engine = Engine(policy(SIM_CONFIG), Fingerprinter(KEY))
    assert Replayer(engine, lambda _a: None, lambda _d: None)._fast is None
    assert "stale build" in caplog.text


def test_with_the_models_on_the_upkeep_is_the_python_paths() -> None:
    """Between checkpoints the compiled path also keeps the behaviour model's counters:
    the same alerts, profiles and baselines (and the online model, which learns in
    order at each checkpoint, scores the same) as the Python path and the full path."""
    model = str(Path(__file__).resolve().parents[2] / "models" / "behaviour.skops")
    cfg = {**SIM_CONFIG, "behaviour": {"model": "both", "path": model, "warmup_steps": 200}}
    buf = io.BytesIO()
    Simulation(users=40, hours=120, seed=5, behaviour_attacks=1).write(buf)
    lines = buf.getvalue().splitlines(keepends=True)
    alerts, replayer = _same(lines, cfg)
    assert b"behaviour_anomaly" in alerts
    assert replayer._fast is not None and replayer._fast.applied > len(lines) // 3


MODEL = str(Path(__file__).resolve().parents[2] / "models" / "behaviour.skops")


@pytest.mark.parametrize("threshold", [0.0, 0.55], ids=["model's threshold", "low threshold"])
def test_with_the_offline_model_checkpoints_are_compiled_and_alerts_are_python_s(
    threshold: float,
) -> None:
    """With the offline forest alone the compiled path also closes windows and scores
    rows; a row that reaches the threshold (many at 0.55) goes to the Python path, which
    raises the alert from the untouched state. Same alerts, profiles and baselines."""
    cfg = {**SIM_CONFIG, "behaviour": {"model": "offline", "path": MODEL, "threshold": threshold}}
    buf = io.BytesIO()
    Simulation(users=40, hours=120, seed=5, behaviour_attacks=1).write(buf)
    lines = buf.getvalue().splitlines(keepends=True)
    alerts, replayer = _same(lines, cfg)
    assert alerts.count(b"behaviour_anomaly") >= (3 if threshold else 1)
    assert replayer._fast is not None and replayer._fast.closed > 500


def _history(user: str, days: int) -> list[bytes]:
    """Three short sessions a day apart: a user the model scores (min_user_sessions 3)."""
    out = []
    for d in range(days):
        sid = f"{d:02d}{user}".ljust(32, "7").upper()[:32]
        for i in range(3):
            ev = {
                **_tx(i, ts=T0 - (days - d) * 86_400 + i * 40, session_id=sid, user=user),
                "type": "login" if i == 0 else "transaction",
                "event_id": f"h{user}{d}{i}",
                "url": f"/page{i}.do",
            }
            out.append(orjson.dumps(ev))
    return out


@st.composite
def working_sessions(draw: st.DrawFn) -> list[bytes]:
    """A session of a mature user: requests at any pace (bursts to long pauses), any
    response sizes (none to huge), old and new paths, across hours of the week."""
    start = T0 + draw(st.integers(0, 6 * 24)) * 3600 + draw(st.floats(0, 3599))
    lines = [orjson.dumps({**_tx(0, ts=start, url="/page0.do"), "type": "login", "event_id": "w0"})]
    ts = start
    for n in range(1, draw(st.integers(3, 40))):
        ts += draw(st.one_of(st.floats(0, 2.9), st.floats(3, 600), st.floats(600, 1700)))
        ev = _tx(n, ts=ts, event_id=f"w{n}")
        url = draw(st.one_of(st.none(), st.sampled_from(["/page0.do", "/page1.do"]), st.text()))
        if url is not None:
            ev["url"] = url
        size = draw(st.one_of(st.none(), st.integers(0, 5000), st.integers(0, 2**62)))
        if size is not None:
            ev["response_bytes"] = size
        lines.append(orjson.dumps(ev))
    return lines


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(working_sessions(), st.floats(0.3, 0.95), st.integers(3, 5))
def test_any_checkpoint_is_closed_and_scored_exactly_as_the_python_path_would(
    session: list[bytes], threshold: float, days: int
) -> None:
    """Logarithms, powers and the forest walk in native/ give Python's doubles: every
    baseline, profile and score decision equal, over paces, sizes and hours."""
    cfg = {**SIM_CONFIG, "behaviour": {"model": "offline", "path": MODEL, "threshold": threshold}}
    _same([*_history("alice", days), *session], cfg)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.one_of(logins(), transactions()), min_size=1, max_size=14),
    st.floats(0.3, 0.95),
    st.sampled_from([SIM_CONFIG, TWO_SESSIONS]),
)
def test_any_login_with_the_model_on_opens_the_profile_python_would(
    body: list[bytes], threshold: float, base: dict[str, Any]
) -> None:
    """With the offline model a plain login also opens the session's profile and
    scores its first request (a mature user's, alice, and new users'): the same
    baselines, profiles and alerts; a first request that alerts is Python's."""
    cfg = {**base, "behaviour": {"model": "offline", "path": MODEL, "threshold": threshold}}
    _same([*_history("alice", 3), LOGIN, LOCKOUT, *body], cfg)


def test_a_window_with_more_bytes_than_64_bits_is_left_to_python() -> None:
    """Python's counters have no limit: a profile whose byte count passed 2**63 (a huge
    response_bytes, valid input) cannot be copied, and must not stop replay."""
    session = [orjson.dumps({**_tx(0, url="/page0.do"), "type": "login", "event_id": "w0"})]
    for n in range(1, 24):
        ev = _tx(n, ts=T0 + n * 10, event_id=f"w{n}")
        if n in (5, 6, 7):
            ev["response_bytes"] = 2**62
        session.append(orjson.dumps(ev))
    cfg = {**SIM_CONFIG, "behaviour": {"model": "offline", "path": MODEL, "threshold": 0.99}}
    _same([*_history("alice", 3), *session], cfg)


@given(
    st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)),
    st.integers(0, 32),
    st.integers(0, 128),
    st.lists(
        st.one_of(
            st.builds(
                lambda a, n: ipaddress.ip_network(f"{a}/{n}", strict=False),
                st.ip_addresses(v=4),
                st.integers(0, 32),
            ),
            st.builds(
                lambda a, n: ipaddress.ip_network(f"{a}/{n}", strict=False),
                st.ip_addresses(v=6),
                st.integers(0, 128),
            ),
        ),
        max_size=3,
    ),
)
def test_a_login_s_network_key_is_the_ladder_s(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
    v4: int,
    v6: int,
    allow: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> None:
    """The compiled path computes the place a login's profile remembers itself."""
    from sessionwatch_native import FastPath

    ladder = IpLadder(v4, v6, allow)
    for ip in (str(address), address.exploded, str(address).upper()):
        key = FastPath.place_key(ip, list(ladder.allow_ranges), v4, v6)
        assert key is None or key == ladder.place_key(ip), ip


@given(st.floats(0, 4_102_444_800))
def test_hour_of_week_is_pythons_at_every_boundary(ts: float) -> None:
    from sessionwatch_native import FastPath

    from detector.anomaly.features import THURSDAY_HOUR, hour_of_week

    assert FastPath.hour_of_week(ts, THURSDAY_HOUR) == hour_of_week(ts)
    edge = round(ts / 3600) * 3600.0
    for t in (edge, math.nextafter(edge, 0), math.nextafter(edge, math.inf)):
        assert FastPath.hour_of_week(t, THURSDAY_HOUR) == hour_of_week(t)
