"""More live sessions than one person plausibly uses: shared or stolen credentials."""

from __future__ import annotations

from detector.indicators.base import Context, Evidence, Indicator


def concurrent_sessions(ctx: Context) -> Evidence | None:
    limit = ctx.policy.max_concurrent_sessions
    if not limit or ctx.live_sessions <= limit:
        return None
    return {"live_sessions": ctx.live_sessions, "max_concurrent_sessions": limit}


INDICATORS = (Indicator("concurrent_sessions", frozenset({"login"}), concurrent_sessions),)
