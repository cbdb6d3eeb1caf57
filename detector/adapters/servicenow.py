"""ServiceNow exports (Table API JSON or CSV list exports) -> SPEC.md events.

``syslog_transaction`` rows are requests on a session; ``sysevent`` rows are the
platform's login/logout/elevation events, with the user in ``parm1`` and the client
address in ``parm2`` (sometimes ``ip:port``). Times are ``yyyy-MM-dd HH:mm:ss`` in UTC
unless a source time zone is configured. Table API answers fetched with
``sysparm_display_value=all`` wrap values as ``{"value", "display_value"}``: the raw
value is used.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, tzinfo
from typing import Any

from detector.adapters.common import compact, record_type, strip_port, vendor_time
from detector.netaddr import valid_ip

GUEST = "guest"

#: sysevent ``name`` -> SPEC.md type.
EVENT_TYPES = {
    "login": "login",
    "external.authentication.succeeded": "login",
    "login.failed": "login_failed",
    "external.authentication.failed": "login_failed",
    "logout": "logout",
    "session.established": "transaction",
    "security.elevated_role.enabled": "elevate",
    "impersonation.start": "elevate",
    "impersonation.end": "elevate",
}


def _value(row: Mapping[str, Any], column: str) -> Any:
    value = row.get(column)
    if isinstance(value, Mapping):
        value = value.get("value")
    if value == "":
        return None
    return value


def _scheme(protocol: Any) -> Any:
    if isinstance(protocol, str) and protocol.strip().lower() in ("http", "https"):
        return protocol.strip().lower()
    return None


def convert_transaction(row: Mapping[str, Any], tz: tzinfo = UTC) -> dict[str, Any] | None:
    """A ``syslog_transaction`` row: one request on a session (``guest`` = no user)."""
    user = _value(row, "sys_created_by")
    guest = user == GUEST
    return compact(
        {
            "event_id": _value(row, "sys_id"),
            "ts": vendor_time(_value(row, "sys_created_on"), tz),
            "type": "transaction",
            "session_id": _value(row, "session"),
            "user": None if guest else user,
            "guest": True if guest else None,
            "ip": strip_port(_value(row, "remote_ip")),
            "url": _value(row, "url"),
            "user_agent": _value(row, "user_agent"),
            "node": _value(row, "system_id"),
            "scheme": _scheme(_value(row, "protocol")),
            "response_time": _value(row, "response_time"),
            "output_length": _value(row, "output_length"),
        }
    )


def convert_event(row: Mapping[str, Any], tz: tzinfo = UTC) -> dict[str, Any] | None:
    """A ``sysevent`` row; None for event names with no meaning for sessions."""
    name = _value(row, "name")
    kind = EVENT_TYPES.get(name) if isinstance(name, str) else None
    if kind is None:
        return None
    parm2 = _value(row, "parm2")
    ip = strip_port(parm2)
    if not (isinstance(ip, str) and valid_ip(ip)):
        ip = None  # parm2 holds a role, a user or nothing: kept as detail
    event: dict[str, Any] = {
        "event_id": _value(row, "sys_id"),
        "ts": vendor_time(_value(row, "sys_created_on"), tz),
        "type": kind,
        "user": _value(row, "parm1"),
        "ip": ip,
        "detail": parm2 if ip is None else None,
        "session_id": _value(row, "session"),
        "node": _value(row, "system_id"),
        "servicenow_event": name,
    }
    if kind == "login_failed":
        event["session_id"] = None
    return compact(event)


def policy_from_properties(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The ``[policy]`` section from a ``sys_properties`` export (rows with ``name`` and
    ``value``): only the properties SPEC.md's policy uses; numbers parsed, anything else
    left as it is for the policy validation to refuse with a clear message."""
    wanted = set(policy_keys())
    section: dict[str, Any] = {}
    for row in rows:
        name = _value(row, "name")
        if name not in wanted:
            continue
        raw = _value(row, "value")
        value: Any = raw
        if isinstance(raw, str):
            text = raw.strip()
            try:
                value = int(text)
            except ValueError:
                try:
                    value = float(text)
                except ValueError:
                    value = text
        section[name] = value
    return section


def policy_keys() -> tuple[str, ...]:
    from detector.policy import POLICY_PROPERTIES

    return POLICY_PROPERTIES


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    return None


class UserSnapshots:
    """``sys_user`` snapshots -> lockout/unlock/deactivate/activate, by difference.

    Each snapshot (one export of ``user_name``, ``locked_out``, ``active``,
    ``sys_updated_on``) is compared with the previous one; a change becomes an event at
    the row's ``sys_updated_on``. The first snapshot states the starting point: users
    already locked out or inactive in it produce a ``lockout``/``deactivate``.
    """

    def __init__(self, tz: tzinfo = UTC) -> None:
        self.tz = tz
        self.state: dict[str, tuple[bool, bool]] = {}  # user -> (locked, active)

    def diff(self, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        first = not self.state
        events: list[dict[str, Any]] = []
        for row in rows:
            user = _value(row, "user_name")
            locked, active = _flag(_value(row, "locked_out")), _flag(_value(row, "active"))
            if not isinstance(user, str) or locked is None or active is None:
                continue
            was_locked, was_active = self.state.get(user, (False, True))
            self.state[user] = (locked, active)
            if first and not locked and active:
                continue
            stamp = _value(row, "sys_updated_on")
            changes = []
            if locked != was_locked:
                changes.append("lockout" if locked else "unlock")
            if active != was_active:
                changes.append("activate" if active else "deactivate")
            for kind in changes:
                events.append(
                    {
                        "event_id": f"sys_user:{user}:{kind}:{stamp}",
                        "ts": vendor_time(stamp, self.tz),
                        "type": kind,
                        "user": user,
                        "actor": _value(row, "sys_updated_by"),
                    }
                )
        return [compact(e) for e in events]


def is_user_row(row: Mapping[str, Any]) -> bool:
    return "user_name" in row and ("locked_out" in row or "active" in row)


def merged(
    exports: Iterable[list[Mapping[str, Any]]], tz: tzinfo = UTC
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Events from any mix of syslog_transaction, sysevent and sys_user exports (one list
    of rows per file, snapshots in the order given), in event-time order; and the counts
    of sysevent names left unmapped."""
    snapshots = UserSnapshots(tz)
    out: list[tuple[float, int, dict[str, Any]]] = []
    unmapped: dict[str, int] = {}
    seq = 0
    for rows in exports:
        if rows and is_user_row(rows[0]):
            mapped: list[dict[str, Any] | None] = list(snapshots.diff(rows))
        else:
            mapped = []
            for row in rows:
                event = convert_event(row, tz) if "name" in row else convert_transaction(row, tz)
                if event is None:
                    name = record_type(row)
                    unmapped[name] = unmapped.get(name, 0) + 1
                mapped.append(event)
        for event in mapped:
            if event is not None:
                ts = event.get("ts")
                out.append((ts if isinstance(ts, float) else float("inf"), seq, event))
                seq += 1
    out.sort(key=lambda item: (item[0], item[1]))
    return [event for _, _, event in out], unmapped
