"""Okta System Log (``/api/v1/logs`` objects, NDJSON or a JSON array) -> SPEC.md events.

The session is Okta's: ``authenticationContext.rootSessionId`` where present (it survives
step-up), else ``externalSessionId``. Account events name their subject in ``target``
and the admin in ``actor``. Okta's enrichment (geolocation, ASN) rides along as extra
fields, which SPEC.md keeps in evidence.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from detector.adapters.common import compact, dig, strip_port, vendor_time

#: Session activity: eventType -> SPEC.md type (successful outcomes only).
_SESSION_TYPES = {
    "user.session.start": "login",
    "user.authentication.sso": "transaction",
    "policy.evaluate_sign_on": "transaction",
    "user.session.context.change": "transaction",
    "user.session.end": "logout",
    "user.session.clear": "terminate",
}
#: Account events: eventType -> SPEC.md type.
_ACCOUNT_TYPES = {
    "user.account.lock": "lockout",
    "user.account.unlock_by_admin": "unlock",
    "user.account.unlock": "unlock",
    "user.lifecycle.deactivate": "deactivate",
    "user.lifecycle.activate": "activate",
    "user.lifecycle.reactivate": "activate",
}
_SUCCESS = {"SUCCESS", "ALLOW"}
_NO_VALUE = {None, "", "unknown", "UNKNOWN", "null"}


def _asn(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _degrees(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _session(record: Mapping[str, Any]) -> Any:
    for field in ("rootSessionId", "externalSessionId"):
        value = dig(record, "authenticationContext", field)
        if value not in _NO_VALUE:
            return value
    return None


def _target_user(record: Mapping[str, Any]) -> Any:
    for target in record.get("target") or ():
        if isinstance(target, Mapping) and target.get("type") == "User":
            return target.get("alternateId")
    return None


def convert(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """One System Log event; None for event types that say nothing about sessions."""
    kind = record.get("eventType")
    result = dig(record, "outcome", "result")
    actor = dig(record, "actor", "alternateId")
    ua = dig(record, "client", "userAgent", "rawUserAgent")
    base: dict[str, Any] = {
        "event_id": record.get("uuid"),
        "ts": vendor_time(record.get("published")),
        "ip": strip_port(dig(record, "client", "ipAddress")),
        "user_agent": None if ua in _NO_VALUE else ua,
        "url": dig(record, "debugContext", "debugData", "requestUri"),
        "geo": dig(record, "client", "geographicalContext"),
        "geo_lat": _degrees(dig(record, "client", "geographicalContext", "geolocation", "lat")),
        "geo_lon": _degrees(dig(record, "client", "geographicalContext", "geolocation", "lon")),
        "asn": _asn(dig(record, "securityContext", "asNumber")),
        "okta_event_type": kind,
    }
    if base["geo_lat"] is None or base["geo_lon"] is None:
        base["geo_lat"] = base["geo_lon"] = None  # both or neither
    if kind in _ACCOUNT_TYPES:
        user = _target_user(record) or actor
        admin = actor if actor != user else None
        return compact({**base, "type": _ACCOUNT_TYPES[kind], "user": user, "actor": admin})
    if kind not in _SESSION_TYPES:
        return None
    spec_type = _SESSION_TYPES[kind]
    if result not in _SUCCESS:
        if kind != "user.session.start":
            return None  # a denied SSO or policy check is not activity on the session
        return compact({**base, "type": "login_failed", "user": actor})
    if spec_type == "terminate":
        session = _session(record)
        if session is None:
            return None  # "clear all sessions" without a session: see README (Okta)
        return compact(
            {**base, "type": "terminate", "session_id": session, "user": _target_user(record),
             "actor": actor}
        )  # fmt: skip
    return compact({**base, "type": spec_type, "session_id": _session(record), "user": actor})
