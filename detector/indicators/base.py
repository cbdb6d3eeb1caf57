"""The one signature every indicator has.

An indicator is a pure function of a :class:`Context` (the event, the session
and user state as they were before this event, and the policy) that returns the
evidence when it fires and ``None`` otherwise. Dedup, severity overrides, mode
and alert rendering belong to the engine, so an indicator can be read, tested
and changed without opening any other file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from detector.events import Event
from detector.netaddr import IpLadder
from detector.policy import Policy
from detector.state import SessionState, UserState

Evidence = dict[str, Any]

#: A necessary condition for an indicator to fire, checked once by the engine so
#: that a routine transaction runs only the few checks that could possibly fire:
#: ``ended`` (the session ID is dead), ``account`` (the user was ever locked out
#: or deactivated), ``first_sight`` (the ID is new), ``live`` (not ended), ``located``
#: (the event carries a location).
Gate = Literal["always", "ended", "account", "first_sight", "live", "located"]


@dataclass(slots=True)
class Context:
    """Everything one decision may look at. ``session`` is never None for activity."""

    event: Event
    ts: float
    session: SessionState
    user: UserState | None
    policy: Policy
    ladder: IpLadder
    #: The session ID was never seen before this event.
    first_sight: bool = False
    #: The session existed as a guest session before this (login) event.
    prior_guest: bool = False
    #: Live sessions of the user including this one (computed for logins only).
    live_sessions: int = 0
    #: Estimated entropy of the session ID in bits (computed on first sight only).
    id_bits: float = 0.0
    #: Event time at which the engine started (for ``unknown_session``'s grace).
    started_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Indicator:
    """An indicator's metadata and its check; ``severity`` may refine the catalogue's."""

    name: str
    events: frozenset[str]
    check: Callable[[Context], Evidence | None]
    severity: Callable[[Context], str] | None = None
    gate: Gate = "always"
