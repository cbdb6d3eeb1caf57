"""Session events (SPEC.md §2) and their strict decoding.

Decoding is the only place that trusts nothing: every record either becomes an
:class:`Event` whose fields the engine may rely on without further checks, or an
:class:`InvalidEvent` carrying a short machine-readable reason (a bounded set,
usable as a metric label) and a human sentence.

>>> ev = decode(b'{"event_id":"e1","ts":"2026-11-22T10:00:00Z","type":"logout",'
...             b'"session_id":"S","user":"alice"}')
>>> ev.type, ev.epoch
('logout', 1795341600.0)
>>> decode(b'{"event_id":"e1","ts":1,"type":"logout","user":"alice"}').reason
'missing_field'
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal

import msgspec

from detector.netaddr import valid_ip

EventType = Literal[
    "login",
    "transaction",
    "logout",
    "terminate",
    "lockout",
    "unlock",
    "deactivate",
    "activate",
    "elevate",
    "login_failed",
]

#: Types that count as activity on a session (SPEC.md §4 reading rules).
ACTIVITY_TYPES: Final = frozenset({"transaction", "login", "elevate"})
#: Types that act on a user rather than a session.
USER_TYPES: Final = frozenset({"lockout", "unlock", "deactivate", "activate"})

_NEEDS_SESSION: Final = frozenset({"login", "transaction", "logout", "terminate", "elevate"})
_NEEDS_USER: Final = frozenset(
    {"login", "logout", "lockout", "unlock", "deactivate", "activate", "login_failed", "elevate"}
)
_NEEDS_IP: Final = frozenset({"login", "transaction", "login_failed"})

#: Lines longer than this are dead-lettered unread: no legitimate event is near it,
#: and parsing attacker-sized blobs is a cheap denial of service.
MAX_LINE_BYTES: Final = 64 * 1024

# Event times outside [1970, 2100) are data errors, not history or the future.
_MIN_EPOCH: Final = 0.0
_MAX_EPOCH: Final = 4_102_444_800.0

#: Seconds an event time may be ahead of the detecting host's clock (``decode``'s
#: ``now``). Event time is the detector's clock: one event dated years ahead (a source's
#: wrong clock or time zone) moved it there, and every session then looked expired: on a
#: simulated day one such event wiped the state, 43 unknown_session and 5
#: idle_timeout_exceeded alerts followed and 2 lifespan_exceeded alerts were lost. Five
#: minutes is far beyond clock drift under NTP and well inside the idle timeouts.
MAX_AHEAD_S: Final = 300.0

#: Reasons an input record is refused; the set is closed so it can label metrics.
REASONS: Final = (
    "not_json",
    "not_object",
    "oversized",
    "wrong_type",
    "missing_field",
    "unknown_type",
    "bad_ip",
    "bad_time",
    # Not a bad record: the engine failed on a valid one (a bug). The worker dead-letters
    # it rather than stop or drop it; replay stops loudly instead.
    "processing_error",
)


class Event(msgspec.Struct, gc=False):
    """One decoded, validated event. ``epoch`` is the event time in epoch seconds."""

    event_id: str
    ts: datetime | float
    type: EventType
    session_id: str | None = None
    user: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    scheme: Literal["https", "http"] = "https"
    url: str | None = None
    node: str | None = None
    guest: bool = False
    remember_me: bool = False
    previous_session_id: str | None = None
    new_session_id: str | None = None
    actor: str | None = None
    # Extension (README): the client's location in degrees, from the platform's own
    # enrichment (Okta) or a GeoIP lookup upstream; used by impossible_travel.
    geo_lat: float | None = None
    geo_lon: float | None = None
    # Extension (README): the client's autonomous system (Okta's securityContext).
    asn: int | None = None
    # Extension (README): bytes sent back to the client (ServiceNow's output length,
    # OCSF's http_response.length); a behaviour feature when present.
    response_bytes: Annotated[int, msgspec.Meta(ge=0)] | None = None
    # Filled by validate(); the odd wire name keeps a record's own "epoch" key an extra.
    epoch: float = msgspec.field(default=0.0, name="~sessionwatch.epoch")

    @property
    def is_guest(self) -> bool:
        """A guest transaction is flagged as such or carries no user (SPEC.md §2)."""
        return self.guest or self.user is None


#: Field names of the SPEC event; anything else in a record is "extra" evidence.
KNOWN_FIELDS: Final = frozenset(Event.__struct_fields__) - {"epoch"}
#: Fields that hold session IDs and must never leave the process unhashed.
SESSION_ID_FIELDS: Final = ("session_id", "previous_session_id", "new_session_id")


class InvalidEvent(msgspec.Struct, gc=False):
    """Why a record was refused: ``reason`` is one of :data:`REASONS`."""

    reason: str
    message: str

    def describe(self) -> str:
        return f"{self.reason}: {self.message}"


_decoder = msgspec.json.Decoder(Event)


def _classify(err: msgspec.ValidationError) -> InvalidEvent:
    text = str(err)
    if text.startswith("Object missing required field"):
        return InvalidEvent("missing_field", text)
    if "`$.type`" in text and "Invalid enum value" in text:
        return InvalidEvent("unknown_type", text)
    if "`$.ts`" in text:
        return InvalidEvent("bad_time", text)
    if text.startswith("Expected `object`"):
        return InvalidEvent("not_object", text)
    return InvalidEvent("wrong_type", text)


def dated_ahead(epoch: float, now: float) -> bool:
    """An event time the detector refuses, ``now`` being the host's clock (the compiled
    path's check mirrors it)."""
    return epoch > now + MAX_AHEAD_S


def decode(line: bytes | str, now: float | None = None) -> Event | InvalidEvent:
    """Decode and validate one JSON record; never raises on bad input. With ``now`` (the
    host's clock, as the detector reads it), an event time more than :data:`MAX_AHEAD_S`
    after it is refused too."""
    if len(line) > MAX_LINE_BYTES:
        # Measured without the line's ending, which replay's lines keep and Kafka's
        # records do not: a record must get the same verdict from both.
        size = len(line.strip())
        if size > MAX_LINE_BYTES:
            return InvalidEvent("oversized", f"record of {size} bytes exceeds {MAX_LINE_BYTES}")
    try:
        ev = _decoder.decode(line)
    except msgspec.ValidationError as err:
        return _classify(err)
    except msgspec.DecodeError as err:
        return InvalidEvent("not_json", str(err))
    return validate(ev, now)


def validate(ev: Event, now: float | None = None) -> Event | InvalidEvent:
    """Checks msgspec's types cannot express: per-type required fields, zones, IPs."""
    ts = ev.ts
    if isinstance(ts, datetime):
        if ts.tzinfo is None:
            return InvalidEvent("bad_time", "timestamp has no time zone (RFC 3339 needs one)")
        epoch = ts.timestamp()
    else:
        epoch = float(ts)
    if not _MIN_EPOCH <= epoch < _MAX_EPOCH:
        return InvalidEvent("bad_time", f"event time {epoch!r} is outside 1970..2100")
    if now is not None and dated_ahead(epoch, now):
        return InvalidEvent(
            "bad_time",
            f"event time {epoch!r} is {epoch - now:.0f} s ahead of this host's clock (at most "
            f"{MAX_AHEAD_S:g} s): the source's clock or time zone, or this host's clock, is wrong",
        )
    ev.epoch = epoch
    kind = ev.type
    if kind in _NEEDS_SESSION and not ev.session_id:
        return InvalidEvent("missing_field", f"`session_id` is required for {kind}")
    if kind in _NEEDS_USER and not ev.user:
        return InvalidEvent("missing_field", f"`user` is required for {kind}")
    if kind in _NEEDS_IP:
        if not ev.ip:
            return InvalidEvent("missing_field", f"`ip` is required for {kind}")
        if not valid_ip(ev.ip):
            return InvalidEvent("bad_ip", f"`ip` is not an IPv4 or IPv6 address: {ev.ip[:64]!r}")
    elif ev.ip is not None and not valid_ip(ev.ip):
        return InvalidEvent("bad_ip", f"`ip` is not an IPv4 or IPv6 address: {ev.ip[:64]!r}")
    if not ev.event_id:
        return InvalidEvent("missing_field", "`event_id` is empty")
    if ev.geo_lat is not None or ev.geo_lon is not None:
        lat, lon = ev.geo_lat, ev.geo_lon
        if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
            return InvalidEvent("wrong_type", "`geo_lat`/`geo_lon` must both be degrees in range")
    return ev
