"""Scores alerts against simulator labels: the oracle behind "recall 1.0, zero FPs".

An alert matches a label when indicator and event agree (alert ids depend on the
fingerprint key, labels must not). Every alert that matches no label is a false
positive, whatever its indicator.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from detector.alerts import Alert
from detector.engine import Engine
from detector.events import Event, decode
from detector.replay import Replayer


@dataclass
class Score:
    labels: int = 0
    found: int = 0
    missed: list[dict[str, Any]] = field(default_factory=list)
    false_positives: list[Alert] = field(default_factory=list)
    wrong_severity: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    per_indicator: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # tp, fn, fp

    @property
    def recall(self) -> float:
        return self.found / self.labels if self.labels else 1.0


def score(alerts: Iterable[Alert], labels: Iterable[dict[str, Any]]) -> Score:
    by_key = {(a.kind, a.event_id): a for a in alerts}
    result = Score()
    matched: set[tuple[str, str]] = set()
    tp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    for lb in labels:
        key = (lb["indicator"], lb["event_id"])
        result.labels += 1
        alert = by_key.get(key)
        if alert is None:
            result.missed.append(lb)
            fn[lb["indicator"]] += 1
            continue
        result.found += 1
        tp[lb["indicator"]] += 1
        matched.add(key)
        if lb.get("severity") and alert.severity != lb["severity"]:
            result.wrong_severity.append((lb, alert.severity))
    for key, alert in by_key.items():
        if key not in matched:
            result.false_positives.append(alert)
            fp[alert.kind] += 1
    for name in sorted(set(tp) | set(fn) | set(fp)):
        result.per_indicator[name] = (tp[name], fn[name], fp[name])
    return result


@dataclass
class Quality:
    """Precision, recall and session-level ROC AUC of one indicator or model."""

    name: str
    tp: int
    fn: int
    fp: int
    auc: float | None
    threshold: float | None = None
    fpr: float | None = None  # benign sessions at or above the threshold (models)
    #: Found and labelled per attack kind (models), e.g. {"bulk_export": (5, 5)}.
    by_attack: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


@dataclass
class Report:
    indicators: list[Quality]
    models: list[Quality]
    sessions: int  # authenticated sessions in the log
    benign: int  # of which with no label at all


def roc_auc(positives: list[float], negatives: list[float]) -> float | None:
    """Probability that a positive outscores a negative (ties count half): ROC AUC.

    >>> roc_auc([0.9, 0.8], [0.1, 0.8])
    0.875
    """
    if not positives or not negatives:
        return None
    ranked = sorted([(s, 1) for s in positives] + [(s, 0) for s in negatives])
    rank_sum = 0.0
    i = 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        mid = (i + j + 1) / 2  # average 1-based rank of the tie group
        rank_sum += mid * sum(lab for _, lab in ranked[i:j])
        i = j
    n_pos, n_neg = len(positives), len(negatives)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def evaluate(
    alerts: Iterable[Alert],
    labels: Iterable[dict[str, Any]],
    session_of: dict[str, str],
    authenticated: set[str],
    model_scores: dict[str, dict[str, float]],
    thresholds: dict[str, float],
) -> Report:
    """Scores a replay against labels, per indicator and per behaviour model.

    ``session_of`` maps event ids to session fingerprints. A label of a rule
    indicator matches the alert of that indicator on its event; a
    ``behaviour_anomaly`` label (on an attack's first event) matches that
    indicator's alert anywhere in the same session, since the model may need a
    few requests to be sure. AUC is per session: positives are the sessions
    labelled with the indicator, negatives the authenticated sessions with no
    label at all; a rule's score is 1 if it alerted on the session.
    """
    alerts = list(alerts)
    labels = list(labels)
    labelled = {session_of.get(lb["event_id"]) for lb in labels} - {None}
    benign = authenticated - labelled
    kinds = sorted({lb["indicator"] for lb in labels} | {a.kind for a in alerts})
    indicators = []
    for kind in kinds:
        mine = [a for a in alerts if a.kind == kind]
        wanted = [lb for lb in labels if lb["indicator"] == kind]
        if kind == "behaviour_anomaly":
            keys = {a.session for a in mine}
            want = {session_of.get(lb["event_id"]) for lb in wanted} - {None}
        else:
            keys = {a.event_id for a in mine}
            want = {lb["event_id"] for lb in wanted}
        tp = len(keys & want)
        alerted = {a.session for a in mine}
        pos_sessions = {session_of.get(lb["event_id"]) for lb in wanted} - {None}
        auc = roc_auc(
            [float(s in alerted) for s in pos_sessions], [float(s in alerted) for s in benign]
        )
        indicators.append(Quality(kind, tp, len(want) - tp, len(keys - want), auc))
    models = []
    attack_of = {
        session_of[lb["event_id"]]: str(lb.get("attack", "")).split("#")[0]
        for lb in labels
        if lb["indicator"] == "behaviour_anomaly" and lb["event_id"] in session_of
    }
    attack_sessions = set(attack_of)
    for name, scores in sorted(model_scores.items()):
        thr = thresholds[name]
        pos = [scores.get(s, 0.0) for s in attack_sessions]
        neg = [scores.get(s, 0.0) for s in benign]
        tp = sum(s >= thr for s in pos)
        fp = sum(s >= thr for s in neg)
        by_attack: dict[str, tuple[int, int]] = {}
        for session, attack in sorted(attack_of.items(), key=lambda kv: kv[1]):
            found, total = by_attack.get(attack, (0, 0))
            by_attack[attack] = (found + (scores.get(session, 0.0) >= thr), total + 1)
        rate = fp / len(neg) if neg else 0.0
        models.append(Quality(name, tp, len(pos) - tp, fp, roc_auc(pos, neg), thr, rate, by_attack))
    return Report(indicators, models, len(authenticated), len(benign))


def replay_and_evaluate(
    engine: Engine, lines: Sequence[bytes], labels: Iterable[dict[str, Any]]
) -> Report:
    """Replays ``lines`` through ``engine`` (remembering model scores) and evaluates it.

    The fingerprint key only joins labels to sessions here: any key will do.
    """
    beh = engine.behaviour
    if beh is not None:
        beh.session_scores = {}
    alerts: list[Alert] = []
    Replayer(engine, alerts.append, lambda _d: None).feed(lines, "evaluate")
    fingerprint = engine.fingerprint
    session_of: dict[str, str] = {}
    authenticated: set[str] = set()
    for line in lines:
        ev = decode(line)
        if type(ev) is not Event or ev.session_id is None:
            continue
        fp = fingerprint(ev.session_id)
        session_of[ev.event_id] = fp
        if ev.user is not None and not ev.guest:
            authenticated.add(fp)
            if ev.new_session_id:
                authenticated.add(fingerprint(ev.new_session_id))
    models = beh.models if beh is not None else []
    return evaluate(
        alerts,
        labels,
        session_of,
        authenticated,
        (beh.session_scores if beh is not None else None) or {},
        {m.name: m.threshold for m in models},
    )
