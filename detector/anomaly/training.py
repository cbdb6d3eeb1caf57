"""Training data from recorded logs: the engine's own feature rows, nothing else.

Rows come from replaying the logs through the same engine code that scores live
traffic (with every rule on and no model), so a model is trained on exactly the
features it will see. Labels are never used: an isolation forest learns what is
common, and recorded traffic is overwhelmingly benign.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, BinaryIO

from detector.anomaly.offline import OfflineModel, fit
from detector.anomaly.scoring import Scorer
from detector.engine import Engine
from detector.fingerprint import Fingerprinter
from detector.policy import Policy
from detector.replay import Replayer

Frame = Callable[[BinaryIO], Iterable[bytes]]


def collect(
    paths: Iterable[str], policy: Policy, frame: Frame | None = None
) -> tuple[list[list[float]], list[int]]:
    """Feature rows of every scored session step, and a session number per row."""
    scorer = Scorer([], min_user_sessions=policy.behaviour.min_user_sessions, rows=[])
    # Fingerprints only group rows by session here; a throwaway key is fine.
    engine = Engine(policy, Fingerprinter(b"training"), behaviour=scorer)
    summary = Replayer(engine, lambda _a: None, lambda _d: None).run(list(paths), frame=frame)
    if summary.damaged:  # a model fitted to part of a log is not what was asked for
        raise ValueError(f"input unreadable from some point on ({'; '.join(summary.damaged)})")
    assert scorer.rows is not None
    numbers: dict[str, int] = {}
    rows, sessions = [], []
    for session, row in scorer.rows:
        rows.append(row)
        sessions.append(numbers.setdefault(session, len(numbers)))
    return rows, sessions


def train(
    paths: list[str],
    policy: Policy,
    *,
    seed: int = 0,
    target_fpr: float = 0.0005,
    frame: Frame | None = None,
) -> OfflineModel:
    started = time.perf_counter()
    rows, sessions = collect(paths, policy, frame)
    meta: dict[str, Any] = {
        "trained_on": [p.rsplit("/", 1)[-1] for p in paths],
        "trained_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "min_user_sessions": policy.behaviour.min_user_sessions,
    }
    model = fit(rows, sessions, seed=seed, target_fpr=target_fpr, meta=meta)
    model.meta["seconds"] = round(time.perf_counter() - started, 1)
    return model
