"""Per-session and per-user state: small, serialisable, free of raw session IDs.

Both kinds are msgspec structs so a store can keep them as they are (memory) or
encode them compactly (a Faust table's changelog, RocksDB). Sessions are keyed
by fingerprint, users by user name.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from detector.anomaly.features import Baseline, Profile

EndReason = Literal["logout", "terminate", "rotation"]


class SessionState(msgspec.Struct, gc=False):
    """What the engine remembers about one session ID.

    ``start`` is the login time (a guest session's first event); ``last`` the
    latest activity. ``raised`` counts occurrences per indicator, which is the
    dedup memory: an indicator alerts once per session and counts the rest.
    """

    start: float
    last: float
    user: str | None = None
    guest: bool = False
    remember_me: bool = False
    known: bool = True  # seen at login or created by a rotation
    login_ip: str | None = None
    last_ip: str | None = None
    login_ua: str | None = None
    login_asn: int | None = None
    node: str | None = None
    ended: EndReason | None = None
    ended_at: float = 0.0
    raised: dict[str, int] = msgspec.field(default_factory=dict)
    #: Recent behaviour against the user's baseline (only with a behaviour model on).
    profile: Profile | None = None


class UserState(msgspec.Struct, gc=False):
    """Account state that outlives any one session: lock-out, deactivation, live sessions."""

    last: float
    locked: bool = False
    locked_at: float | None = None
    inactive: bool = False
    deactivated_at: float | None = None
    #: Fingerprints. A tuple, as every container of the state: Python stops tracking
    #: tuples of strings, so full garbage collections do not walk the state (lists: ~100
    #: ms per 30,000 bundles decoded).
    sessions: tuple[str, ...] = ()
    #: Where and when the user was last seen active: (latitude, longitude, event time).
    geo: tuple[float, float, float] | None = None
    #: The user's habits (only with a behaviour model on).
    baseline: Baseline | None = None
