"""behaviour_anomaly end to end in the engine: alerts, secrecy, determinism, quality."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pytest

from detector.alerts import Alert
from detector.engine import Engine
from detector.evaluate import replay_and_evaluate
from detector.events import Event, decode
from detector.fingerprint import Fingerprinter
from detector.policy import Policy
from detector.replay import JsonLinesWriter, Replayer
from detector.simulate import SIM_CONFIG, Simulation
from tests.helpers import KEY

ROOT = Path(__file__).resolve().parents[3]
MODEL = str(ROOT / "models" / "behaviour.skops")


def config(model: str = "offline") -> dict[str, Any]:
    return {**SIM_CONFIG, "behaviour": {"model": model, "path": MODEL, "warmup_steps": 200}}


def week(users: int, attacks: int, seed: int, hours: float = 168) -> tuple[bytes, list[Any]]:
    events, labels = io.BytesIO(), io.BytesIO()
    Simulation(users=users, hours=hours, seed=seed, behaviour_attacks=attacks).write(events, labels)
    return events.getvalue(), [orjson.loads(x) for x in labels.getvalue().splitlines()]


def replay(data: bytes, cfg: dict[str, Any]) -> tuple[list[Alert], bytes, Engine]:
    alerts: list[Alert] = []
    out = io.BytesIO()
    writer = JsonLinesWriter(out)
    engine = Engine(Policy.from_mapping(cfg), Fingerprinter(KEY))

    def sink(alert: Alert) -> None:
        alerts.append(alert)
        writer(alert)

    Replayer(engine, sink, lambda _d: None).feed(data.splitlines(), "test")
    writer.flush()
    return alerts, out.getvalue(), engine


@pytest.fixture(scope="module")
def small_week() -> tuple[bytes, list[Any]]:
    return week(users=40, attacks=1, seed=5, hours=120)


def test_behaviour_alerts_carry_score_reasons_and_no_session_id(
    small_week: tuple[bytes, list[Any]],
) -> None:
    data, _ = small_week
    alerts, out, engine = replay(data, config())
    found = [a for a in alerts if a.kind == "behaviour_anomaly"]
    assert found
    for a in found:
        assert a.details["model"] == "offline"
        assert a.details["score"] >= a.details["threshold"]
        assert a.severity in ("low", "medium", "high")
        assert a.action == "none" and a.mode == "monitor"
        top = a.details["top_features"]
        assert 1 <= len(top) <= 3 and all(t["weight"] > 0 for t in top)
    assert len({a.session for a in found}) == len(found)  # once per session
    for line in data.splitlines():
        ev = decode(line)
        if isinstance(ev, Event) and ev.session_id:
            assert ev.session_id.encode() not in out
    assert engine.behaviour is not None


def test_replay_with_models_is_byte_identical(small_week: tuple[bytes, list[Any]]) -> None:
    data, _ = small_week
    for model in ("offline", "both"):
        _, first, _ = replay(data, config(model))
        _, second, _ = replay(data, config(model))
        assert first == second
        assert b"behaviour_anomaly" in first


def test_rule_alerts_do_not_change_with_the_model_on(small_week: tuple[bytes, list[Any]]) -> None:
    data, _ = small_week
    without, _, _ = replay(data, dict(SIM_CONFIG))
    with_model, _, _ = replay(data, config())
    assert [a for a in with_model if a.kind != "behaviour_anomaly"] == without


def test_quality_targets_on_an_unseen_simulated_week() -> None:
    """ROC AUC >= 0.95, FPR <= 0.1 % of benign sessions, recall >= 0.8 (a fixed-seed week;
    bench/behaviour_quality.py measures three larger ones for the model card)."""
    data, labels = week(users=100, attacks=3, seed=1)
    engine = Engine(Policy.from_mapping(config()), Fingerprinter(KEY))
    assert engine.behaviour is not None
    report = replay_and_evaluate(engine, data.splitlines(), labels)
    (model,) = report.models
    assert model.tp + model.fn == 9
    assert model.auc is not None and model.auc >= 0.95
    assert model.recall >= 0.8
    assert model.fpr is not None and model.fpr <= 0.001
    rules = [q for q in report.indicators if q.name != "behaviour_anomaly"]
    assert all(q.fn == 0 and q.fp == 0 for q in rules), rules


def test_routine_shortcut_feeds_the_models_as_the_full_path(
    small_week: tuple[bytes, list[Any]],
) -> None:
    """The online model learns in order: any request skipped or doubled would show."""
    data, _ = small_week
    outputs = []
    for shortcut in (True, False):
        out = io.BytesIO()
        writer = JsonLinesWriter(out)
        engine = Engine(Policy.from_mapping(config("both")), Fingerprinter(KEY))
        engine.routine_shortcut = shortcut
        Replayer(engine, writer, writer).feed(data.splitlines(), "test")
        writer.flush()
        outputs.append(out.getvalue())
    assert outputs[0] == outputs[1]
    assert b"behaviour_anomaly" in outputs[0]
