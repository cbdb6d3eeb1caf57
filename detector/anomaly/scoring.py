"""The configured behaviour models, scoring one session step at a time.

A step is scored the moment it happens, so its alert leaves with its own event:
streaming's at-least-once bookkeeping (alerts kept per event for re-sending) and
replay's byte-for-byte output both rely on that.
"""

from __future__ import annotations

from dataclasses import dataclass

from detector.anomaly.base import Model
from detector.policy import Behaviour


@dataclass
class Scorer:
    """The models; optionally remembers scores (evaluation) and rows (training)."""

    models: list[Model]
    min_user_sessions: int = 3
    #: Highest score per model and session, when asked for (evaluation).
    session_scores: dict[str, dict[str, float]] | None = None
    #: Every scored row with its session, when asked for (training).
    rows: list[tuple[str, list[float]]] | None = None

    def score(self, session: str, row: list[float]) -> list[tuple[Model, float]]:
        if self.rows is not None:
            self.rows.append((session, row))
        results = [(m, m.score_one(row)) for m in self.models]
        if self.session_scores is not None:
            for m, sc in results:
                best = self.session_scores.setdefault(m.name, {})
                if sc > best.get(session, -1.0):
                    best[session] = sc
        return results


def build(settings: Behaviour) -> Scorer | None:
    """The scorer a config asks for, loading model files now (start-up), or None."""
    if settings.model == "none":
        return None
    models: list[Model] = []
    if settings.model in ("offline", "both"):
        from detector.anomaly.offline import load

        offline = load(settings.path, expect_sha256=settings.sha256)
        if settings.threshold is not None:
            offline.threshold = settings.threshold
        models.append(offline)
    if settings.model in ("online", "both"):
        from detector.anomaly.online import OnlineModel

        models.append(
            OnlineModel(
                threshold=settings.online_threshold,
                warmup=settings.warmup_steps,
                seed=settings.seed,
            )
        )
    return Scorer(models, min_user_sessions=settings.min_user_sessions)
