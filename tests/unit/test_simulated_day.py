"""The labelled simulated day: every attack found, no benign session alerted."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest

from detector.evaluate import score
from detector.policy import Policy
from detector.simulate import ATTACKS, SIM_CONFIG, Simulation
from tests.helpers import replay

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("users", "hours", "seed"), [(150, 24, 11), (40, 72, 12)])
def test_labelled_day_recall_one_and_no_false_positive(users: int, hours: int, seed: int) -> None:
    events, labels = io.BytesIO(), io.BytesIO()
    stats = Simulation(users=users, hours=hours, seed=seed).write(events, labels)
    assert stats.events > 5_000
    alerts, dead, _ = replay(events.getvalue().splitlines(), SIM_CONFIG)
    assert dead == []
    result = score(alerts, [orjson.loads(x) for x in labels.getvalue().splitlines()])
    assert result.missed == []
    assert result.false_positives == []
    assert result.wrong_severity == []
    assert result.recall == 1.0
    implemented = {k for k in ATTACKS if k != "hijack_after_logout"}
    assert implemented <= set(result.per_indicator)


def test_bundled_sample_matches_its_labels() -> None:
    lines = (ROOT / "examples" / "sample-events.jsonl").read_bytes().splitlines()
    labels = [
        orjson.loads(x)
        for x in (ROOT / "examples" / "sample-labels.jsonl").read_bytes().splitlines()
    ]
    policy_cfg = Policy.load(ROOT / "examples" / "policy.toml")
    assert policy_cfg.max_concurrent_sessions == SIM_CONFIG["detector"]["max_concurrent_sessions"]
    alerts, dead, _ = replay(lines, SIM_CONFIG)
    result = score(alerts, labels)
    assert dead == [] and result.missed == [] and result.false_positives == []


def test_bundled_sample_is_what_the_simulator_makes() -> None:
    buf, lab = io.BytesIO(), io.BytesIO()
    Simulation(users=12, hours=24, seed=7).write(buf, lab)
    assert buf.getvalue() == (ROOT / "examples" / "sample-events.jsonl").read_bytes()
    assert lab.getvalue() == (ROOT / "examples" / "sample-labels.jsonl").read_bytes()
