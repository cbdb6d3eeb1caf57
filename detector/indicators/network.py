"""The session moved: another network, another browser or device.

Both compare with the session's login (a guest session's first event), never
with the previous event, so a slow drift cannot walk a session away unnoticed.
``ip_change`` uses the tolerance ladder of :mod:`detector.netaddr`, plus, when
the events carry one (Okta), the autonomous system: the same ASN as at login is
the same provider's network (``trust_same_asn``);
``user_agent_change`` ignores version upgrades and is high when the session has
also changed network, medium alone (a second browser on the same desk happens).
"""

from __future__ import annotations

from detector.events import ACTIVITY_TYPES
from detector.indicators.base import Context, Evidence, Indicator
from detector.useragent import classify


def ip_change(ctx: Context) -> Evidence | None:
    ip, login_ip = ctx.event.ip, ctx.session.login_ip
    if ip is None or login_ip is None or ctx.ladder.same_place(login_ip, ip):
        return None
    asn, login_asn = ctx.event.asn, ctx.session.login_asn
    if asn is not None and asn == login_asn and ctx.policy.trust_same_asn:
        return None  # the same provider's network (mobile carriers hop prefixes)
    evidence: Evidence = {"login_ip": login_ip, "previous_ip": ctx.session.last_ip}
    if asn is not None or login_asn is not None:
        evidence.update(login_asn=login_asn, asn=asn)
    return evidence


def user_agent_change(ctx: Context) -> Evidence | None:
    ua, login_ua = ctx.event.user_agent, ctx.session.login_ua
    if not ua or not login_ua or ua == login_ua:
        return None
    was, now = classify(login_ua), classify(ua)
    if was == now:
        return None
    return {
        "login_user_agent": login_ua,
        "user_agent": ua,
        "login_browser": was[0],
        "login_os": was[1],
        "browser": now[0],
        "os": now[1],
    }


def _ua_severity(ctx: Context) -> str:
    return "high" if "ip_change" in ctx.session.raised else "medium"


INDICATORS = (
    Indicator("ip_change", ACTIVITY_TYPES, ip_change),
    Indicator("user_agent_change", ACTIVITY_TYPES, user_agent_change, _ua_severity),
)
