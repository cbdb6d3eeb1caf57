"""What a behaviour model must offer the engine: scores in order, and reasons.

Scores are in [0, 1], higher is stranger, so thresholds of different models read
alike. ``score_one`` sees rows in event order and may learn from them (an online
model does, after scoring each one), which is why the engine never reorders them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol


class ModelError(ValueError):
    """A model file that must not be used; the message says why.

    Defined here, not next to the loader, so catching it needs no scikit-learn import.
    """


class Contribution(NamedTuple):
    """One feature's part in a score: its value and what is usual for it."""

    feature: str
    value: float
    usual: float
    weight: float  # how far from usual, in units of the usual spread


class Model(Protocol):
    """A behaviour model as the engine uses it."""

    @property
    def name(self) -> str: ...

    @property
    def threshold(self) -> float: ...

    def score_one(self, row: Sequence[float]) -> float:
        """Scores one row (and learns from it if the model is online)."""
        ...

    def explain(self, row: Sequence[float], top: int = 3) -> list[Contribution]:
        """The features that most set ``row`` apart, strongest first."""
        ...


def margin(score: float, threshold: float) -> float:
    """How far a score lies between its model's threshold (0) and certainty (1)."""
    return (score - threshold) / max(1.0 - threshold, 1e-9)


def severity(score: float, threshold: float) -> str:
    """Low just above the threshold, high when the score is far into the tail.

    >>> severity(0.62, 0.6), severity(0.75, 0.6), severity(0.9, 0.6)
    ('low', 'medium', 'high')
    """
    past = margin(score, threshold)
    if past >= 0.5:
        return "high"
    if past >= 0.2:
        return "medium"
    return "low"


def contributions(
    row: Sequence[float],
    names: Sequence[str],
    center: Sequence[float],
    spread: Sequence[float],
    top: int,
) -> list[Contribution]:
    """Features ranked by distance from their usual value, in units of usual spread."""
    found = [
        Contribution(name, round(value, 4), round(mid, 4), round(abs(value - mid) / width, 2))
        for name, value, mid, width in zip(names, row, center, spread, strict=True)
    ]
    found.sort(key=lambda c: -c.weight)
    return [c for c in found[:top] if c.weight > 0]
