"""The routine-request shortcut gives exactly the full path's answer."""

from __future__ import annotations

import io
from typing import Any

import pytest

import detector.engine
from detector.engine import ROUTINE_CHECKS, Engine
from detector.fingerprint import Fingerprinter
from detector.replay import JsonLinesWriter, Replayer
from detector.simulate import SIM_CONFIG, Simulation
from tests.helpers import CHROME, CHROME_NEXT, KEY, SID, Story, policy


def _alerts(lines: list[bytes], cfg: dict[str, Any], shortcut: bool) -> tuple[bytes, Engine]:
    out = io.BytesIO()
    writer = JsonLinesWriter(out)
    engine = Engine(policy(cfg), Fingerprinter(KEY))
    assert engine.routine_shortcut
    engine.routine_shortcut = shortcut
    Replayer(engine, writer, writer).feed(lines, "test")
    writer.flush()
    return out.getvalue(), engine


TIGHT = {
    **SIM_CONFIG,
    "policy": {
        **SIM_CONFIG["policy"],
        "glide.ui.session_timeout": 12,
        "glide.guest.session_timeout": 5,
    },
    "detector": {**SIM_CONFIG["detector"], "ip_prefix_v4": 28, "trust_same_asn": False},
}


@pytest.mark.parametrize("cfg", [SIM_CONFIG, TIGHT], ids=["simulation policy", "tight policy"])
def test_simulated_days_give_byte_identical_output(cfg: dict[str, Any]) -> None:
    buf = io.BytesIO()
    Simulation(users=60, hours=48, seed=23).write(buf)
    lines = buf.getvalue().splitlines()
    fast, engine = _alerts(lines, cfg, shortcut=True)
    full, _ = _alerts(lines, cfg, shortcut=False)
    assert fast == full
    assert fast.count(b"\n") > 20  # the comparison covers real alerts
    assert len(engine.store.sessions) > 100  # type: ignore[attr-defined]


def test_each_check_still_fires_after_routine_requests() -> None:
    """Routine requests first, then one request tripping each check in turn."""
    s = Story()
    s.login(0)
    for minute in range(1, 6):
        s.tx(minute, ip="10.1.2.77")  # same /24: routine
    s.tx(6, user_agent=CHROME_NEXT)  # a version upgrade: the full path, no alert
    s.tx(7, scheme="http")
    s.tx(50)  # idle 43 minutes
    s.tx(51, ip="203.0.113.9")
    s.tx(52, user_agent="curl/8.5.0")
    s.tx(700)  # past the 10 h life span
    lines = s.lines()
    fast, _ = _alerts(lines, SIM_CONFIG, shortcut=True)
    full, _ = _alerts(lines, SIM_CONFIG, shortcut=False)
    assert fast == full
    for kind in ROUTINE_CHECKS:
        assert f'"kind":"{kind}"'.encode() in fast, kind
    assert SID.encode() not in fast and CHROME.encode() in fast


def test_shortcut_off_when_the_routine_plan_holds_an_unknown_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(detector.engine, "ROUTINE_CHECKS", ROUTINE_CHECKS - {"ip_change"})
    assert not Engine(policy(SIM_CONFIG), Fingerprinter(KEY)).routine_shortcut
    off = {**SIM_CONFIG, "rules": {"ip_change": {"enabled": False}}}
    assert Engine(policy(off), Fingerprinter(KEY)).routine_shortcut
