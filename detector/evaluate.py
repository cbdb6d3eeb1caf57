"""Scores alerts against simulator labels: the oracle behind "recall 1.0, zero FPs".

An alert matches a label when indicator and event agree (alert ids depend on the
fingerprint key, labels must not). Every alert that matches no label is a false
positive, whatever its indicator.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from detector.alerts import Alert


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
