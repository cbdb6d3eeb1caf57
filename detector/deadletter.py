"""Dead letters (SPEC.md §2): what was refused, why, and where it came from.

The record is kept so nothing is lost, but with every session ID replaced by
its fingerprint first, and cut to 4 KiB. A record that is not even JSON may
still carry a session ID in plain sight, so JSON-looking ``"…session…": "…"``
pairs are fingerprinted in the raw text too.
"""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec
import orjson

from detector.events import MAX_LINE_BYTES, InvalidEvent
from detector.fingerprint import Fingerprinter

MAX_RECORD_BYTES: Final = 4096

_SESSIONISH = re.compile(rb'("[^"\\]*session[^"\\]*"\s*:\s*")((?:[^"\\]|\\.)*)(")', re.IGNORECASE)
# A value cut off by truncation: drop it rather than keep a prefix of a secret.
_CUT_SESSIONISH = re.compile(rb'("[^"\\]*session[^"\\]*"\s*:\s*")((?:[^"\\]|\\.)*)$', re.IGNORECASE)


class DeadLetter(msgspec.Struct):
    """One refused record, in SPEC.md's key order."""

    reason: str
    source: str
    offset: int
    record: Any


def scrub(raw: bytes, fingerprint: Fingerprinter) -> Any:
    """The record with session IDs fingerprinted: a JSON value if it parses, else text."""
    try:
        # An oversized record is never parsed whole (that is why it was refused).
        value = orjson.loads(raw) if len(raw) <= MAX_LINE_BYTES else None
    except orjson.JSONDecodeError:
        value = None
    if value is not None:
        cleaned = _scrub_value(value, fingerprint)
        encoded = orjson.dumps(cleaned)
        if len(encoded) <= MAX_RECORD_BYTES:
            return cleaned
        raw = encoded
    text = _SESSIONISH.sub(
        lambda m: (
            m.group(1) + fingerprint(m.group(2).decode("utf-8", "replace")).encode() + m.group(3)
        ),
        raw[: 2 * MAX_RECORD_BYTES],
    )[:MAX_RECORD_BYTES]
    text = _CUT_SESSIONISH.sub(lambda m: m.group(1) + b"[truncated]", text)
    return text.decode("utf-8", "replace")


def _scrub_value(value: Any, fingerprint: Fingerprinter) -> Any:
    if isinstance(value, dict):
        return {
            k: (
                fingerprint(v)
                if isinstance(v, str) and "session" in k.lower()
                else _scrub_value(v, fingerprint)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_scrub_value(v, fingerprint) for v in value]
    return value


def dead_letter(
    invalid: InvalidEvent, raw: bytes, source: str, offset: int, fingerprint: Fingerprinter
) -> DeadLetter:
    return DeadLetter(invalid.describe(), source, offset, scrub(raw, fingerprint))
