"""The online model: river's HalfSpaceTrees behind a min-max scaler, learning live.

It needs no training file and follows drift (a new application, a reorganised
team), at the price of being order-dependent: its score for a step depends on
every step it learned before. Given the same steps in the same order and seed it
is exactly reproducible, so two replays agree, and a worker agrees with replay
on the same partition order. Each worker learns from its own partitions only and
keeps no changelog of the model (it warms up again after a restart), which is
why the frozen offline model is the default and this one an option.

Warm-up: half-space trees compare each window with the previous one, so the
first ``warmup`` steps only teach; their score is reported as 0.

>>> m = OnlineModel(threshold=0.9, warmup=2, seed=1)
>>> rows = ([0.0] * len(FEATURES), [0.1] * len(FEATURES), [0.0] * len(FEATURES))
>>> [m.score_one(row) for row in rows][:2]
[0.0, 0.0]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from river import anomaly, compose, preprocessing

from detector.anomaly.base import Contribution, contributions
from detector.anomaly.features import FEATURES


class OnlineModel:
    """Scores each step, then learns it."""

    name = "online"

    def __init__(self, *, threshold: float, warmup: int, seed: int) -> None:
        self.threshold = threshold
        self.warmup = warmup
        self.seen = 0
        self._model = compose.Pipeline(
            preprocessing.MinMaxScaler(),
            anomaly.HalfSpaceTrees(n_trees=25, height=8, window_size=250, seed=seed),
        )
        # Running mean and variance per feature (Welford), for explanations only.
        self._mean = [0.0] * len(FEATURES)
        self._m2 = [0.0] * len(FEATURES)

    def score_one(self, row: Sequence[float]) -> float:
        model = self._model
        x = dict(zip(FEATURES, row, strict=True))
        score = float(model.score_one(x)) if self.seen >= self.warmup else 0.0
        model.learn_one(x)
        self.seen += 1
        n = self.seen
        for i, value in enumerate(row):
            delta = value - self._mean[i]
            self._mean[i] += delta / n
            self._m2[i] += delta * (value - self._mean[i])
        return score

    def explain(self, row: Sequence[float], top: int = 3) -> list[Contribution]:
        n = max(self.seen, 1)
        spread = [max(2.0 * math.sqrt(m2 / n), 0.05) for m2 in self._m2]
        return contributions(row, FEATURES, self._mean, spread, top)
