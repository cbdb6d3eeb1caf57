"""Session fixation: an ID that survives authentication or elevation.

The platform rotates the ID at login and at privilege elevation precisely so an
attacker who planted or learned the pre-authentication ID gains nothing. A login
that keeps the guest ID, or an elevation without a new ID, defeats that.
"""

from __future__ import annotations

from detector.indicators.base import Context, Evidence, Indicator


def session_fixation(ctx: Context) -> Evidence | None:
    ev = ctx.event
    if ev.type == "login":
        if ev.previous_session_id is not None and ev.previous_session_id == ev.session_id:
            return {"reason": "login kept the pre-authentication session ID"}
        if ctx.prior_guest:
            return {"reason": "login on an ID already seen as a guest session"}
        return None
    if ev.new_session_id is None or ev.new_session_id == ev.session_id:
        return {"reason": "privilege elevation without a new session ID"}
    return None


INDICATORS = (Indicator("session_fixation", frozenset({"login", "elevate"}), session_fixation),)
