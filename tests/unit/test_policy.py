"""Config validation: refuse what would make the detector lie, warn on odd values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from detector.policy import Policy, PolicyError

ROOT = Path(__file__).resolve().parents[2]


def problems(cfg: dict[str, Any]) -> list[str]:
    with pytest.raises(PolicyError) as info:
        Policy.from_mapping(cfg)
    return info.value.problems


def test_servicenow_defaults() -> None:
    p = Policy.from_mapping({})
    assert (p.idle_timeout_s, p.life_span_s, p.guest_idle_timeout_s, p.logout_grace_s) == (
        1800.0,
        0.0,
        1800.0,
        0.0,
    )
    assert p.clock_skew_s == 5 and p.ip_prefix_v4 == 24 and p.min_session_id_bits == 64


def test_bundled_example_loads() -> None:
    p = Policy.load(ROOT / "examples" / "policy.toml")
    assert p.life_span_s == 600 * 60 and p.rule("reuse_after_logout").mode == "enforce"
    assert p.rule("impossible_travel").enabled  # silent without event locations


def test_life_span_must_exceed_idle_timeout() -> None:
    (msg,) = problems({"policy": {"glide.ui.active.session.life_span": 30}})
    assert "glide.ui.active.session.life_span" in msg and "above" in msg
    (msg,) = problems({"policy": {"glide.guest.active.session.life_span": 10}})
    assert "glide.guest.active.session.life_span" in msg


def test_guest_timeout_not_above_user_timeout() -> None:
    (msg,) = problems({"policy": {"glide.guest.session_timeout": 60}})
    assert "glide.guest.session_timeout" in msg


def test_every_problem_is_listed_at_once() -> None:
    found = problems(
        {
            "policy": {"glide.ui.session_timeout": -3, "glide.nope": 1},
            "detector": {"ip_prefix_v4": 40, "allow_cidrs": ["not-a-net"], "bogus": 1},
            "rules": {"made_up": {"enabled": False}, "ip_change": {"mode": "block"}},
            "extra": {},
        }
    )
    text = "\n".join(found)
    for needle in (
        "negative",
        "glide.nope",
        "ip_prefix_v4",
        "not-a-net",
        "bogus",
        "made_up",
        "mode",
        "[extra]",
    ):
        assert needle in text
    assert len(found) == 8


def test_unimplemented_catalogue_rule_may_be_disabled() -> None:
    p = Policy.from_mapping({"rules": {"behaviour_anomaly": {"enabled": False}}})
    assert not p.rule("behaviour_anomaly").enabled


def test_rule_severity_and_mode_override() -> None:
    p = Policy.from_mapping({"rules": {"ip_change": {"severity": "critical", "mode": "enforce"}}})
    r = p.rule("ip_change")
    assert (r.severity, r.mode, r.action) == ("critical", "enforce", "terminate_session")


def test_long_timeouts_warn(caplog: pytest.LogCaptureFixture) -> None:
    p = Policy.from_mapping({"policy": {"glide.ui.session_timeout": 2000}})
    assert any("above 24 h" in w for w in p.warnings)
    assert "above 24 h" in caplog.text


def test_types_are_checked() -> None:
    assert "must be a number" in problems({"policy": {"glide.ui.session_timeout": "30"}})[0]
    assert "true or false" in problems({"rules": {"ip_change": {"enabled": "no"}}})[0]


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text("[policy\n")
    with pytest.raises(PolicyError, match="not valid TOML"):
        Policy.load(f)
    with pytest.raises(PolicyError, match="cannot read"):
        Policy.load(tmp_path / "missing.toml")
