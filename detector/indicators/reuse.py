"""Activity on a session ID the platform has already invalidated.

A stolen cookie keeps working for the thief only if the platform forgets to
kill it; seeing it again after logout, an admin's terminate or a rotation is the
clearest sign of replay. Logout has a grace period
(``glide.unauthorized.session_timeout``) during which the session really lives on.
"""

from __future__ import annotations

from detector.alerts import rfc3339
from detector.events import ACTIVITY_TYPES
from detector.indicators.base import Context, Evidence, Indicator


def _after(ctx: Context, reason: str, grace_s: float = 0.0) -> Evidence | None:
    s = ctx.session
    if s.ended != reason:
        return None
    late = ctx.ts - s.ended_at
    if late <= grace_s + ctx.policy.clock_skew_s:
        return None
    return {"ended_at": rfc3339(s.ended_at), "seconds_after_end": round(late, 3)}


def reuse_after_logout(ctx: Context) -> Evidence | None:
    return _after(ctx, "logout", ctx.policy.logout_grace_s)


def reuse_after_termination(ctx: Context) -> Evidence | None:
    return _after(ctx, "terminate")


def reuse_after_rotation(ctx: Context) -> Evidence | None:
    return _after(ctx, "rotation")


INDICATORS = (
    Indicator("reuse_after_logout", ACTIVITY_TYPES, reuse_after_logout, gate="ended"),
    Indicator("reuse_after_termination", ACTIVITY_TYPES, reuse_after_termination, gate="ended"),
    Indicator("reuse_after_rotation", ACTIVITY_TYPES, reuse_after_rotation, gate="ended"),
)
