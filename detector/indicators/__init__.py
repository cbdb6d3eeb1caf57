"""The indicator catalogue of SPEC.md §4, one module per family.

``REGISTRY`` lists the implemented indicators in the catalogue's order, which is
the order alerts of one event are emitted in. ``behaviour_anomaly`` (the anomaly
models) is a catalogue name a config may refer to, not implemented here yet.
"""

from __future__ import annotations

from detector.indicators import (
    account,
    concurrency,
    fixation,
    network,
    reuse,
    timeouts,
    transport,
    travel,
    unknown,
    weak_id,
)
from detector.indicators.base import Context, Evidence, Indicator
from detector.policy import CATALOGUE

_ALL = {
    ind.name: ind
    for module in (
        reuse,
        account,
        fixation,
        network,
        timeouts,
        transport,
        weak_id,
        unknown,
        concurrency,
        travel,
    )
    for ind in module.INDICATORS
}

REGISTRY: tuple[Indicator, ...] = tuple(_ALL[name] for name in CATALOGUE if name in _ALL)

__all__ = ["REGISTRY", "Context", "Evidence", "Indicator"]
