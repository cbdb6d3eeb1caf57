"""The routing key of an event: what must live together in one partition.

Every decision about a session needs that session's state and its user's
account state (lock-out ends *all* of a user's sessions; the concurrency limit
counts them), so events that name a user are keyed by the user. Guest
sessions, and the few event types that may omit the user (a guest transaction,
an admin ``terminate``), are keyed by the session fingerprint. Keys are
prefixed so a user called like a fingerprint cannot collide with one.

>>> from detector.fingerprint import Fingerprinter
>>> from detector.events import decode
>>> fp = Fingerprinter(b"k")
>>> routing_key(decode(b'{"event_id":"1","ts":1,"type":"lockout","user":"ann"}'), fp)
'u:ann'
"""

from __future__ import annotations

from detector.events import Event
from detector.fingerprint import Fingerprinter


def routing_key(ev: Event, fingerprint: Fingerprinter) -> str:
    if ev.user:
        return "u:" + ev.user
    if ev.session_id:
        return "s:" + fingerprint(ev.session_id)
    return "e:" + ev.event_id  # cannot happen for a valid event; keeps the key total
