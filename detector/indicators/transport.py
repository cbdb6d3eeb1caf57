"""An authenticated session's request over plain HTTP exposes its cookie on the wire."""

from __future__ import annotations

from detector.events import ACTIVITY_TYPES
from detector.indicators.base import Context, Evidence, Indicator


def insecure_transport(ctx: Context) -> Evidence | None:
    if ctx.session.guest or ctx.event.scheme != "http":
        return None
    return {"scheme": "http"}


INDICATORS = (Indicator("insecure_transport", ACTIVITY_TYPES, insecure_transport),)
