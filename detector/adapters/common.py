"""Helpers the adapters share: IPs with ports, vendor timestamps, nested look-ups."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any


def dig(record: Mapping[str, Any], *path: str) -> Any:
    """``record[a][b]...`` or None when any step is missing or not an object."""
    value: Any = record
    for step in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(step)
    return value


def strip_port(ip: Any) -> Any:
    """``10.1.2.3:443`` -> ``10.1.2.3``; ``[2001:db8::1]:443`` -> ``2001:db8::1``.

    Anything else is returned as it is (a bare IPv6 address has colons but no port;
    a bad value is left for strict decoding to refuse).
    """
    if not isinstance(ip, str):
        return ip
    ip = ip.strip()
    if ip.startswith("[") and "]" in ip:
        return ip[1 : ip.index("]")]
    if ip.count(":") == 1:
        return ip.split(":", 1)[0]
    return ip


def vendor_time(value: Any, naive_tz: Any = UTC) -> Any:
    """Vendor timestamps to SPEC.md's: RFC 3339 strings keep their zone; a zone-less
    ``yyyy-MM-dd HH:mm:ss`` is read in ``naive_tz`` (UTC unless configured); epoch
    milliseconds (OCSF) become seconds. Unreadable values pass through for decoding
    to refuse with ``bad_time``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value / 1000.0 if value > 1e11 else float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return value
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=naive_tz)
        return parsed.timestamp()
    return value


def compact(event: dict[str, Any]) -> dict[str, Any]:
    """Drops absent (None) optional fields so that decoding sees them as absent."""
    return {k: v for k, v in event.items() if v is not None}


def record_type(record: Mapping[str, Any]) -> str:
    """A short label of the record's vendor type, for the unmapped counts."""
    for key in ("eventType", "class_uid", "name", "type"):
        value = record.get(key)
        if isinstance(value, Mapping):  # ServiceNow display_value=all
            value = value.get("value")
        if value is not None:
            return str(value)[:64]
    return "unknown"
