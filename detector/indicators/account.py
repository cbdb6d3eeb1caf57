"""Activity of a user the administrator has locked out or deactivated.

Locking a user out ends all their sessions and forbids new ones until unlock, so
a session that was alive at the lock-out is dead for good, even after an unlock;
a new login is forbidden only while the lock lasts. Deactivation works the same
way and is reported under its own name.
"""

from __future__ import annotations

from detector.alerts import rfc3339
from detector.events import ACTIVITY_TYPES
from detector.indicators.base import Context, Evidence, Indicator


def _after(ctx: Context, blocked: bool, since: float | None) -> Evidence | None:
    if since is None or ctx.ts <= since + ctx.policy.clock_skew_s:
        return None
    killed_session = not ctx.first_sight and ctx.session.start <= since
    if not (blocked or killed_session):
        return None
    return {
        "since": rfc3339(since),
        "seconds_after": round(ctx.ts - since, 3),
        "still_blocked": blocked,
    }


def locked_out_activity(ctx: Context) -> Evidence | None:
    u = ctx.user
    return None if u is None else _after(ctx, u.locked, u.locked_at)


def inactive_user_activity(ctx: Context) -> Evidence | None:
    u = ctx.user
    return None if u is None else _after(ctx, u.inactive, u.deactivated_at)


INDICATORS = (
    Indicator("locked_out_activity", ACTIVITY_TYPES, locked_out_activity, gate="account"),
    Indicator("inactive_user_activity", ACTIVITY_TYPES, inactive_user_activity, gate="account"),
)
