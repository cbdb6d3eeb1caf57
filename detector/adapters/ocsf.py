"""OCSF in: Authentication (3002) and HTTP Activity (4002) events -> SPEC.md events.

Authentication: Logon (activity 1) -> ``login``, or ``login_failed`` when its status is
Failure (2); Logoff (2) -> ``logout``; the session is ``session.uid``. HTTP Activity
-> ``transaction`` on ``actor.session.uid``. Times are OCSF's epoch milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from detector.adapters.common import compact, dig, strip_port, vendor_time

AUTHENTICATION = 3002
HTTP_ACTIVITY = 4002


def _user(record: Mapping[str, Any], *base: str) -> Any:
    for field in ("name", "email_addr", "uid"):
        value = dig(record, *base, field)
        if value is not None:
            return value
    return None


def convert(record: Mapping[str, Any]) -> dict[str, Any] | None:
    cls = record.get("class_uid")
    activity = record.get("activity_id")
    common: dict[str, Any] = {
        "event_id": dig(record, "metadata", "uid"),
        "ts": vendor_time(record.get("time")),
        "ip": strip_port(dig(record, "src_endpoint", "ip")),
        "user_agent": dig(record, "http_request", "user_agent"),
        "geo_lat": dig(record, "src_endpoint", "location", "lat"),
        "geo_lon": dig(record, "src_endpoint", "location", "long"),
    }
    if common["geo_lat"] is None or common["geo_lon"] is None:
        common["geo_lat"] = common["geo_lon"] = None  # both or neither
    if cls == AUTHENTICATION:
        session = dig(record, "session", "uid")
        user = _user(record, "user")
        if activity == 1:
            if record.get("status_id") == 2:
                return compact({**common, "type": "login_failed", "user": user})
            return compact(
                {
                    **common,
                    "type": "login",
                    "session_id": session,
                    "user": user,
                }
            )
        if activity == 2:
            return compact({**common, "type": "logout", "session_id": session, "user": user})
        return None
    if cls == HTTP_ACTIVITY:
        url = dig(record, "http_request", "url")
        return compact(
            {
                **common,
                "type": "transaction",
                "session_id": dig(record, "actor", "session", "uid"),
                "user": _user(record, "actor", "user"),
                "url": dig(url, "path") if isinstance(url, Mapping) else None,
                "scheme": dig(url, "scheme") if isinstance(url, Mapping) else None,
            }
        )
    return None
