"""An authenticated transaction on an ID no login ever produced.

Session IDs come from logins and rotations; an authenticated request on an ID
the detector never saw created is a forged or smuggled cookie, or a gap in the
log feed. Right after start-up every live session is unknown, hence the grace.
"""

from __future__ import annotations

from detector.indicators.base import Context, Evidence, Indicator


def unknown_session(ctx: Context) -> Evidence | None:
    if not ctx.first_sight or ctx.session.guest:
        return None
    grace = ctx.policy.unknown_session_grace_s
    if grace and ctx.ts - ctx.started_at <= grace + ctx.policy.clock_skew_s:
        return None
    return {"reason": "no login or rotation created this session ID"}


INDICATORS = (
    Indicator("unknown_session", frozenset({"transaction"}), unknown_session, gate="first_sight"),
)
