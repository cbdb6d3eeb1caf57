"""Test helpers that render SPEC.md events the way vendors log them (our own records,
shaped after Okta's System Log and OCSF 1.x schemas), for the adapters' round trips."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime
from typing import Any


def _iso_ms(ts: Any) -> str:
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _epoch_ms(ts: Any) -> int:
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    return round(float(ts) * 1000)


def _asn(ip: str | None) -> int | None:
    """A stand-in ASN per /24 (IPv4) or /48 (IPv6): one network, one operator."""
    if not ip:
        return None
    prefix = ip.rsplit(".", 1)[0] if "." in ip else ":".join(ip.split(":")[:3])
    return 1000 + zlib.crc32(prefix.encode()) % 60000


OKTA_TYPES = {
    "login": ("user.session.start", "SUCCESS"),
    "login_failed": ("user.session.start", "FAILURE"),
    "transaction": ("user.authentication.sso", "SUCCESS"),
    "logout": ("user.session.end", "SUCCESS"),
    "terminate": ("user.session.clear", "SUCCESS"),
    "lockout": ("user.account.lock", "SUCCESS"),
    "unlock": ("user.account.unlock_by_admin", "SUCCESS"),
    "deactivate": ("user.lifecycle.deactivate", "SUCCESS"),
    "activate": ("user.lifecycle.activate", "SUCCESS"),
}


def okta_expressible(ev: dict[str, Any]) -> bool:
    """Okta has no guests, elevation rotation, Remember-me flag or cleartext scheme."""
    if ev["type"] not in OKTA_TYPES or not ev.get("user"):
        return False
    if ev["type"] == "terminate" and not ev.get("session_id"):
        return False
    return not any(ev.get(k) for k in ("guest", "remember_me", "previous_session_id")) and (
        ev.get("scheme", "https") == "https"
    )


def to_okta(ev: dict[str, Any]) -> dict[str, Any]:
    event_type, result = OKTA_TYPES[ev["type"]]
    admin = ev.get("actor") or "admin@example.com"
    account = ev["type"] in ("lockout", "unlock", "deactivate", "activate", "terminate")
    person = {"id": "00u" + ev["user"], "type": "User", "alternateId": ev["user"]}
    record: dict[str, Any] = {
        "uuid": ev["event_id"],
        "published": _iso_ms(ev["ts"]),
        "eventType": event_type,
        "version": "0",
        "severity": "INFO",
        "displayMessage": event_type,
        "actor": {"id": "00uadmin", "type": "User", "alternateId": admin} if account else person,
        "target": [person] if account else [],
        "outcome": {"result": result, "reason": None},
        "client": {
            "ipAddress": ev.get("ip"),
            "userAgent": {"rawUserAgent": ev.get("user_agent") or "UNKNOWN"},
            "geographicalContext": {"country": "Germany", "city": "Berlin"},
        },
        "securityContext": {"asNumber": _asn(ev.get("ip"))},
        "authenticationContext": {"externalSessionId": ev.get("session_id") or "unknown"},
        "debugContext": {"debugData": {"requestUri": ev.get("url")}},
    }
    return record


def ocsf_expressible(ev: dict[str, Any]) -> bool:
    """Authentication (3002) and HTTP Activity (4002) carry logins, logouts, requests."""
    if ev["type"] not in ("login", "login_failed", "logout", "transaction"):
        return False
    return not any(ev.get(k) for k in ("remember_me", "previous_session_id", "guest"))


def to_ocsf(ev: dict[str, Any]) -> dict[str, Any]:
    meta = {"uid": ev["event_id"], "version": "1.3.0", "product": {"name": "test-platform"}}
    endpoint = {"ip": ev["ip"]} if ev.get("ip") else {}
    if ev["type"] == "transaction":
        url: dict[str, Any] = {"scheme": ev.get("scheme", "https")}
        if ev.get("url"):
            url["path"] = ev["url"]
        actor: dict[str, Any] = {"session": {"uid": ev["session_id"]}}
        if ev.get("user"):
            actor["user"] = {"name": ev["user"]}
        return {
            "class_uid": 4002,
            "category_uid": 4,
            "activity_id": 3,  # Get
            "type_uid": 400203,
            "time": _epoch_ms(ev["ts"]),
            "severity_id": 1,
            "metadata": meta,
            "actor": actor,
            "src_endpoint": endpoint,
            "http_request": {"url": url, "user_agent": ev.get("user_agent")},
        }
    activity = 2 if ev["type"] == "logout" else 1
    record: dict[str, Any] = {
        "class_uid": 3002,
        "category_uid": 3,
        "activity_id": activity,
        "type_uid": 300200 + activity,
        "time": _epoch_ms(ev["ts"]),
        "severity_id": 1,
        "status_id": 2 if ev["type"] == "login_failed" else 1,
        "metadata": meta,
        "user": {"name": ev["user"]},
        "src_endpoint": endpoint,
        "http_request": {"user_agent": ev.get("user_agent")},
    }
    if ev.get("session_id"):
        record["session"] = {"uid": ev["session_id"]}
    return record


SERVICENOW_EVENT_NAMES = {
    "login": "login",
    "login_failed": "login.failed",
    "logout": "logout",
    "elevate": "security.elevated_role.enabled",
}


def servicenow_expressible(ev: dict[str, Any]) -> bool:
    """syslog_transaction and sysevent carry requests, logins, logouts, elevations (without
    rotation); no Remember-me flag or pre-login session."""
    if ev["type"] not in (*SERVICENOW_EVENT_NAMES, "transaction"):
        return False
    if ev["type"] == "elevate" and ev.get("new_session_id") not in (None, ev.get("session_id")):
        return False
    return not any(ev.get(k) for k in ("remember_me", "previous_session_id"))


def servicenow_view(ev: dict[str, Any]) -> dict[str, Any]:
    """What ServiceNow records of an event: sysevent rows carry no user agent."""
    if ev["type"] == "transaction":
        return ev
    return {k: v for k, v in ev.items() if k != "user_agent"}


def _servicenow_time(ts: Any) -> str:
    return _iso_ms(ts).replace("T", " ")[:19]


def to_servicenow(ev: dict[str, Any]) -> dict[str, Any]:
    """A syslog_transaction row for a request, a sysevent row for the rest (Table API)."""
    if ev["type"] == "transaction":
        row = {
            "sys_id": ev["event_id"],
            "sys_created_on": _servicenow_time(ev["ts"]),
            "sys_created_by": ev.get("user") or "guest",
            "session": ev["session_id"],
            "remote_ip": ev["ip"],
            "url": ev.get("url", ""),
            "user_agent": ev.get("user_agent", ""),
            "system_id": ev.get("node", ""),
            "protocol": ev.get("scheme", "https").upper(),
            "response_time": "84",
        }
        return row
    row = {
        "sys_id": ev["event_id"],
        "sys_created_on": _servicenow_time(ev["ts"]),
        "name": SERVICENOW_EVENT_NAMES[ev["type"]],
        "parm1": ev["user"],
        "parm2": f"{ev['ip']}:51234" if ev.get("ip") else "admin",
        "session": ev.get("session_id", ""),
        "system_id": ev.get("node", ""),
    }
    return row
