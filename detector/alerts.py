"""Alerts (SPEC.md §5): deterministic ids, fixed key order, RFC 3339 UTC times."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import msgspec


class Alert(msgspec.Struct, gc=False):
    """One alert; field order is the SPEC's key order on the wire."""

    alert_id: str
    kind: str
    severity: str
    ts: str
    event_id: str
    session: str
    user: str | None
    ip: str | None
    details: dict[str, Any]
    action: str
    mode: str


def alert_id(kind: str, session_fp: str, event_id: str) -> str:
    """Same indicator, session and event always give the same id, in replay and streaming.

    >>> alert_id("ip_change", "ab" * 16, "e1") == alert_id("ip_change", "ab" * 16, "e1")
    True
    """
    data = f"{kind}\x1f{session_fp}\x1f{event_id}".encode()
    return hashlib.blake2b(data, digest_size=16, person=b"sw-alert").hexdigest()


def rfc3339(epoch: float) -> str:
    """Epoch seconds to RFC 3339 UTC, microseconds kept only when present.

    >>> rfc3339(1795341600), rfc3339(1795341600.25)
    ('2026-11-22T10:00:00Z', '2026-11-22T10:00:00.25Z')
    """
    whole = int(epoch // 1)
    micros = round((epoch - whole) * 1_000_000)
    if micros == 1_000_000:
        whole, micros = whole + 1, 0
    day, secs = divmod(whole, 86_400)
    date = _dates.get(day)
    if date is None:
        if len(_dates) >= 4096:
            _dates.clear()
        date = _dates[day] = datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y-%m-%d")
    hour, rest = divmod(secs, 3600)
    text = f"{date}T{hour:02d}:{rest // 60:02d}:{rest % 60:02d}"
    if micros:
        text += f".{micros:06d}".rstrip("0")
    return text + "Z"


# strftime per alert was a fifth of an alerting request's cost; days repeat.
_dates: dict[int, str] = {}


_encoder = msgspec.json.Encoder()


def encode(alert: Alert) -> bytes:
    return _encoder.encode(alert)


def decode(data: bytes | str) -> Alert:
    return msgspec.json.decode(data, type=Alert)
