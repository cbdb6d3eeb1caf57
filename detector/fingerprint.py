"""Keyed session-ID fingerprints.

A session ID is a bearer credential: whoever holds it is the user. sessionwatch
keys all state, alerts and dead letters on a keyed BLAKE2b digest instead, so a
leaked alert stream or state store cannot be replayed against the platform, and
without the key the digest cannot even be confirmed against a guessed ID.

>>> fp = Fingerprinter(b"k" * 32)
>>> fp("0123456789ABCDEF") == fp("0123456789ABCDEF"), len(fp("x"))
(True, 32)
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Final

log = logging.getLogger(__name__)

#: Used only when the configured environment variable is unset. Fingerprints made
#: with it are predictable, which is fine for demos and tests and nothing else.
DEVELOPMENT_KEY: Final = b"sessionwatch-development-key-do-not-use-in-production"

#: A "session ID" of this form names a session by its fingerprint (the session API's
#: terminate, SOC tooling that only ever saw fingerprints); it is not hashed again.
FINGERPRINT_PREFIX: Final = "sw-fp:"
_PREFIX_LEN: Final = len(FINGERPRINT_PREFIX)


class Fingerprinter:
    """Maps raw session IDs to 32-hex-digit keyed digests."""

    __slots__ = ("_base", "_key")

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("fingerprint key must not be empty")
        # BLAKE2b keys are at most 64 bytes; longer secrets are hashed down first.
        if len(key) > 64:
            key = hashlib.blake2b(key).digest()
        self._key = key
        self._base = hashlib.blake2b(key=key, digest_size=16, person=b"sw-session")

    def __call__(self, session_id: str) -> str:
        if session_id[:_PREFIX_LEN] == FINGERPRINT_PREFIX:
            return session_id[_PREFIX_LEN:]
        h = self._base.copy()
        try:
            h.update(session_id.encode())  # the C fast path; same bytes when it succeeds
        except UnicodeEncodeError:  # a lone surrogate from a JSON escape
            h.update(session_id.encode("utf-8", "surrogatepass"))
        return h.hexdigest()

    @property
    def key(self) -> bytes:
        """The BLAKE2b key in use (for the compiled replay path; never log it)."""
        return self._key

    @classmethod
    def from_env(cls, env_name: str) -> Fingerprinter:
        """Reads the key from ``env_name``; falls back, loudly, to the development key."""
        value = os.environ.get(env_name, "")
        if not value:
            log.warning(
                "%s is not set: using the built-in development key, so session fingerprints "
                "are predictable. Set %s to a long random secret in production.",
                env_name,
                env_name,
            )
            return cls(DEVELOPMENT_KEY)
        return cls(value.encode("utf-8"))
