"""Sessions kept alive against policy: past the idle timeout or the life span.

A platform that honours its timeouts would have ended such a session, so
activity on it means the timeout is not enforced, or a client is replaying a
stored cookie. Remember-me sessions are exempt from the idle timeout but not
from the life span, which applies whatever the activity. Only live sessions are
judged: activity on an ended one is a reuse indicator's business.
"""

from __future__ import annotations

from detector.events import ACTIVITY_TYPES
from detector.indicators.base import Context, Evidence, Indicator


def idle_timeout_exceeded(ctx: Context) -> Evidence | None:
    s = ctx.session
    if s.ended is not None or s.remember_me:
        return None
    p = ctx.policy
    timeout = p.guest_idle_timeout_s if s.guest else p.idle_timeout_s
    idle = ctx.ts - s.last
    if idle <= timeout + p.clock_skew_s:
        return None
    return {"idle_seconds": round(idle, 3), "timeout_seconds": timeout}


def lifespan_exceeded(ctx: Context) -> Evidence | None:
    s = ctx.session
    if s.ended is not None:
        return None
    p = ctx.policy
    span = p.guest_life_span_s if s.guest else p.life_span_s
    if not span:
        return None
    age = ctx.ts - s.start
    if age <= span + p.clock_skew_s:
        return None
    return {"age_seconds": round(age, 3), "life_span_seconds": span}


INDICATORS = (
    Indicator("idle_timeout_exceeded", ACTIVITY_TYPES, idle_timeout_exceeded, gate="live"),
    Indicator("lifespan_exceeded", ACTIVITY_TYPES, lifespan_exceeded, gate="live"),
)
