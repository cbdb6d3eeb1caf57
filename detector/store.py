"""Where the engine keeps state: an interface and the in-memory store replay uses.

The engine asks for state by key and hands it back when changed; it never holds
references across events. That is what lets the streaming worker put Faust
tables (changelogged, partitioned) behind the same interface.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Generic, NamedTuple, Protocol, TypeVar

from detector.state import SessionState, UserState

#: Expiry buckets are one minute of event time wide: coarse enough that a sweep
#: touches few buckets, fine enough that memory is released promptly.
BUCKET_S = 60.0

K = TypeVar("K")


class Census(NamedTuple):
    """Live sessions by kind and entries per state table, counted for metrics."""

    user_sessions: int
    guest_sessions: int
    entries: dict[str, int]


def count_live(
    sessions: Iterable[SessionState], active: Callable[[SessionState], bool]
) -> tuple[int, int]:
    """Live (``active``) sessions as (users, guests), for a store's census."""
    users = guests = 0
    for s in sessions:
        if active(s):
            if s.guest:
                guests += 1
            else:
                users += 1
    return users, guests


class StateStore(Protocol):
    def get_session(self, fp: str) -> SessionState | None: ...
    def put_session(self, fp: str, state: SessionState) -> None: ...
    def get_user(self, name: str) -> UserState | None: ...
    def put_user(self, name: str, state: UserState) -> None: ...
    def sweep(self, now: float) -> int:
        """Drops state whose expiry is at or before ``now`` (event time); returns the count."""
        ...

    def census(self, now: float, active: Callable[[SessionState], bool]) -> Census:
        """Counts live sessions (``active``: as judged at event time ``now``) by kind and
        entries per table, for metrics."""
        ...


class _Wheel(Generic[K]):
    """Timer wheel of one-minute event-time buckets, the due ones found by a heap.

    (Finding the next bucket with ``min()`` over all of them cost a scan per bucket
    popped: with a month of Remember-me retention, tens of thousands of buckets.)
    """

    def __init__(self) -> None:
        self._buckets: dict[int, list[K]] = {}
        self._heap: list[int] = []  # indices of the buckets above

    def arm(self, key: K, expires: float) -> None:
        idx = int(expires // BUCKET_S)
        bucket = self._buckets.get(idx)
        if bucket is None:
            self._buckets[idx] = [key]
            heapq.heappush(self._heap, idx)
        else:
            bucket.append(key)

    def due(self, now: float) -> Iterator[K]:
        limit = int(now // BUCKET_S)
        heap = self._heap
        while heap and heap[0] <= limit:
            yield from self._buckets.pop(heapq.heappop(heap))


class ExpiryIndex(Generic[K]):
    """Which keys may expire when, filed lazily.

    A key is filed once, at its expiry when first seen; activity only pushes expiry
    later, so there is no per-event bookkeeping beyond a set lookup. When its time
    comes the caller checks the real expiry and files it again if it moved. A key
    whose expiry is infinite (a locked user) is not filed, and is looked at again
    on its next write, so an unlock files it.
    """

    def __init__(self) -> None:
        self._wheel: _Wheel[K] = _Wheel()
        self._filed: set[K] = set()

    def touch(self, key: K, expiry: Callable[[], float]) -> None:
        if key not in self._filed:
            self.file(key, expiry())

    def file(self, key: K, expires: float) -> None:
        """Files an unfiled ``key`` to expire at ``expires`` (``touch`` without the check)."""
        if expires < 0.0:
            expires = 0.0  # -inf (nothing left to expire): due at once
        if expires != math.inf:
            self._wheel.arm(key, expires)
            self._filed.add(key)

    def due(self, now: float) -> list[K]:
        """Keys filed to expire at or before ``now``; they are unfiled (``touch`` again)."""
        keys = list(self._wheel.due(now))
        self._filed.difference_update(keys)
        return keys

    @property
    def filed(self) -> set[K]:
        return self._filed

    def __len__(self) -> int:
        return len(self._filed)


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
        self._session_index: ExpiryIndex[str] = ExpiryIndex()
        self._user_index: ExpiryIndex[str] = ExpiryIndex()
        self._sessions_filed = self._session_index.filed
        self._users_filed = self._user_index.filed
        self._written: tuple[set[str], set[str]] | None = None
        self._before_read: Callable[[str], object] | None = None
        self._before_scan: Callable[[], object] | None = None

    def defer_writes(
        self, before_read: Callable[[str], object], before_scan: Callable[[], object]
    ) -> None:
        """Lets a writer hold changes to session objects back: ``before_read(fp)`` is
        called before a session is handed out or a sweep reads it, ``before_scan()``
        before a census reads them all. Read ``sessions`` directly only after
        :meth:`sync`.

        The compiled replay path writes a session's changes back only when something
        is about to read it, not each time it hands a line to the Python path: most
        sessions are touched many times between two reads.
        """
        self._before_read, self._before_scan = before_read, before_scan

    def sync(self) -> None:
        """Brings every session object up to date (see :meth:`defer_writes`)."""
        if self._before_scan is not None:
            self._before_scan()

    def watch(self) -> tuple[set[str], set[str]]:
        """Starts recording the sessions and users written or dropped from here on.

        The compiled replay path keeps copies of the state it reads; it drops the copy
        of anything recorded here (and empties the sets) before it runs again.
        """
        if self._written is None:
            self._written = (set(), set())
        return self._written

    @property
    def filed_sessions(self) -> set[str]:
        """Sessions filed for expiry; a write to any other must go through ``put_session``."""
        return self._session_index.filed

    @property
    def filed_users(self) -> set[str]:
        """Users filed for expiry; a write to any other must go through ``put_user``."""
        return self._user_index.filed

    def get_session(self, fp: str) -> SessionState | None:
        if self._before_read is not None:
            self._before_read(fp)
        return self.sessions.get(fp)

    def put_session(self, fp: str, state: SessionState) -> None:
        if fp not in self._sessions_filed:  # filed already: expiry only moves later
            self._session_index.file(fp, self._session_expiry(state))
        self.sessions[fp] = state
        if self._written is not None:
            self._written[0].add(fp)

    def get_user(self, name: str) -> UserState | None:
        return self.users.get(name)

    def put_user(self, name: str, state: UserState) -> None:
        if name not in self._users_filed:
            self._user_index.file(name, self._user_expiry(state))
        self.users[name] = state
        if self._written is not None:
            self._written[1].add(name)

    def census(self, now: float, active: Callable[[SessionState], bool]) -> Census:
        self.sync()
        # list() snapshots in one C call: safe while the engine thread adds keys.
        sessions = list(self.sessions.values())
        users, guests = count_live(sessions, active)
        return Census(users, guests, {"sessions": len(sessions), "users": len(self.users)})

    def sweep(self, now: float) -> int:
        written = self._written
        dropped = _sweep(
            self.sessions,
            self._session_index,
            self._session_expiry,
            now,
            None if written is None else written[0],
            self._before_read,
        )
        return dropped + _sweep(
            self.users,
            self._user_index,
            self._user_expiry,
            now,
            None if written is None else written[1],
        )


S = TypeVar("S")


def _sweep(
    table: dict[str, S],
    index: ExpiryIndex[str],
    expiry: Callable[[S], float],
    now: float,
    dropped_keys: set[str] | None,
    before_read: Callable[[str], object] | None = None,
) -> int:
    dropped = 0
    for key in index.due(now):
        if before_read is not None:
            before_read(key)
        state = table.get(key)
        if state is None:
            continue
        if expiry(state) <= now:
            del table[key]
            dropped += 1
            if dropped_keys is not None:
                dropped_keys.add(key)
        else:
            index.touch(key, partial(expiry, state))
    return dropped
