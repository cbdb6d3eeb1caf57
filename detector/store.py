"""Where the engine keeps state: an interface and the in-memory store replay uses.

The engine asks for state by key and hands it back when changed; it never holds
references across events. That is what lets the streaming worker put Faust
tables (changelogged, partitioned) behind the same interface.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import NamedTuple, Protocol, TypeVar

from detector.state import SessionState, UserState

#: Expiry buckets are one minute of event time wide: coarse enough that a sweep
#: touches few buckets, fine enough that memory is released promptly.
BUCKET_S = 60.0


class Census(NamedTuple):
    """Live sessions by kind and entries per state table, counted for metrics."""

    user_sessions: int
    guest_sessions: int
    entries: dict[str, int]


class StateStore(Protocol):
    def get_session(self, fp: str) -> SessionState | None: ...
    def put_session(self, fp: str, state: SessionState) -> None: ...
    def get_user(self, name: str) -> UserState | None: ...
    def put_user(self, name: str, state: UserState) -> None: ...
    def sweep(self, now: float) -> int:
        """Drops state whose expiry is at or before ``now`` (event time); returns the count."""
        ...

    def census(self, active: Callable[[SessionState], bool]) -> Census:
        """Counts live sessions (``active``) by kind and entries per table, for metrics."""
        ...


class _Wheel:
    """Lazy timer wheel: one entry per key, re-armed when its expiry moved later.

    Activity only ever pushes expiry later, so a key is filed once and checked
    again only when its bucket comes due: no per-event bookkeeping.
    """

    def __init__(self) -> None:
        self._buckets: dict[int, list[str]] = {}
        self._next = math.inf  # lowest bucket index with entries

    def arm(self, key: str, expires: float) -> None:
        if expires == math.inf:
            return
        idx = int(expires // BUCKET_S)
        bucket = self._buckets.get(idx)
        if bucket is None:
            self._buckets[idx] = [key]
            self._next = min(self._next, idx)
        else:
            bucket.append(key)

    def due(self, now: float) -> Iterator[str]:
        limit = int(now // BUCKET_S)
        while self._next <= limit:
            idx = int(self._next)
            keys = self._buckets.pop(idx, [])
            self._next = min(self._buckets) if self._buckets else math.inf
            yield from keys

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets.values())


class MemoryStore:
    """Dict-backed store with event-time expiry, for replay and tests."""

    def __init__(
        self,
        session_expiry: Callable[[SessionState], float],
        user_expiry: Callable[[UserState], float],
    ) -> None:
        self.sessions: dict[str, SessionState] = {}
        self.users: dict[str, UserState] = {}
        self._session_expiry = session_expiry
        self._user_expiry = user_expiry
        self._session_wheel = _Wheel()
        self._user_wheel = _Wheel()

    def get_session(self, fp: str) -> SessionState | None:
        return self.sessions.get(fp)

    def put_session(self, fp: str, state: SessionState) -> None:
        if fp not in self.sessions:
            self._session_wheel.arm(fp, self._session_expiry(state))
        self.sessions[fp] = state

    def get_user(self, name: str) -> UserState | None:
        return self.users.get(name)

    def put_user(self, name: str, state: UserState) -> None:
        if name not in self.users:
            self._user_wheel.arm(name, self._user_expiry(state))
        self.users[name] = state

    def census(self, active: Callable[[SessionState], bool]) -> Census:
        # list() snapshots in one C call: safe while the engine thread adds keys.
        sessions = list(self.sessions.values())
        guests = users = 0
        for s in sessions:
            if active(s):
                if s.guest:
                    guests += 1
                else:
                    users += 1
        return Census(users, guests, {"sessions": len(sessions), "users": len(self.users)})

    def sweep(self, now: float) -> int:
        dropped = _sweep(self.sessions, self._session_wheel, self._session_expiry, now)
        return dropped + _sweep(self.users, self._user_wheel, self._user_expiry, now)


S = TypeVar("S")


def _sweep(table: dict[str, S], wheel: _Wheel, expiry: Callable[[S], float], now: float) -> int:
    dropped = 0
    rearm: list[tuple[str, float]] = []
    for key in wheel.due(now):
        state = table.get(key)
        if state is None:
            continue
        expires = expiry(state)
        if expires <= now:
            del table[key]
            dropped += 1
        else:
            rearm.append((key, expires))
    for key, expires in rearm:
        wheel.arm(key, expires)
    return dropped
