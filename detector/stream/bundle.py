"""State per routing key, as one Faust table entry, behind the engine's store interface.

Keeping a user's account state and all their sessions in one value keyed by the
routing key makes every table write co-partitioned with the event that causes
it, whichever partition the worker is processing: that is what lets the agent
batch events safely and what makes recovery and rebalancing exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, MutableMapping

import msgspec

from detector.state import SessionState, UserState


class Bundle(msgspec.Struct, gc=False):
    """Everything one routing key owns."""

    user: UserState | None = None
    sessions: dict[str, SessionState] = msgspec.field(default_factory=dict)


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Bundle).decode


class BundleStore:
    """The engine's store, scoped to one routing key at a time.

    ``load(key)`` before an event, ``save()`` after it. Sessions past their expiry
    are dropped on load; bundles left with nothing alive are deleted by
    :meth:`sweep`, which the engine calls from inside stream processing.
    """

    def __init__(
        self,
        table: MutableMapping[bytes, bytes],
        session_expiry: Callable[[SessionState], float],
        user_expiry: Callable[[UserState], float],
    ) -> None:
        self.table = table
        self._session_expiry = session_expiry
        self._user_expiry = user_expiry
        self._key = b""
        self._bundle = Bundle()
        self._dirty = False
        self.watermark = -math.inf

    def load(self, key: str) -> None:
        self._key = key.encode()
        raw = self.table.get(self._key)
        self._bundle = _decode(raw) if raw is not None else Bundle()
        self._dirty = False
        sessions = self._bundle.sessions
        expired = [fp for fp, s in sessions.items() if self._session_expiry(s) <= self.watermark]
        for fp in expired:
            del sessions[fp]
            self._dirty = True

    def save(self) -> None:
        if self._dirty:
            self.table[self._key] = _encode(self._bundle)
            self._dirty = False

    # -- StateStore ---------------------------------------------------------------
    def get_session(self, fp: str) -> SessionState | None:
        return self._bundle.sessions.get(fp)

    def put_session(self, fp: str, state: SessionState) -> None:
        self._bundle.sessions[fp] = state
        self._dirty = True

    def get_user(self, name: str) -> UserState | None:
        return self._bundle.user

    def put_user(self, name: str, state: UserState) -> None:
        self._bundle.user = state
        self._dirty = True

    def sweep(self, now: float) -> int:
        """Deletes local bundles in which nothing is alive any more."""
        self.watermark = now
        dead = []
        for key, raw in list(self.table.items()):
            if key == self._key:
                continue
            b = _decode(raw)
            if b.user is not None and self._user_expiry(b.user) > now:
                continue
            if any(self._session_expiry(s) > now for s in b.sessions.values()):
                continue
            dead.append(key)
        for key in dead:
            del self.table[key]
        return len(dead)
