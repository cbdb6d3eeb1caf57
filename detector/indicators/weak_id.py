"""Session IDs an attacker could guess.

The estimate is deliberately simple and conservative: each character costs the
log2 of the alphabet the ID draws from, except a character that repeats or
steps by one from the previous one, which costs log2(3) (it is predictable from
its neighbour), and the total never exceeds the ID's empirical Shannon entropy
times its length (low variety). A 32-hex-digit ServiceNow ID scores about 110
bits; counters and padded numbers score far below 64.

>>> round(estimate_bits("SESSION0001234"))
44
>>> estimate_bits("0123456789ABCDEF" * 2) < 64 < estimate_bits("9F3A1C7E5B2D48A6C0E1F7B3D95A2C4E")
True
"""

from __future__ import annotations

import math
from collections import Counter
from itertools import pairwise
from typing import Final

from detector.indicators.base import Context, Evidence, Indicator

_HEX: Final = frozenset("0123456789abcdefABCDEF")
_PREDICTABLE_BITS: Final = math.log2(3)


def _alphabet(sid: str) -> int:
    chars = set(sid)
    if chars <= _HEX and not (
        any(c in "abcdef" for c in chars) and any(c in "ABCDEF" for c in chars)
    ):
        return 16
    size = 0
    if any(c.isdigit() for c in chars):
        size += 10
    if any(c.islower() for c in chars):
        size += 26
    if any(c.isupper() for c in chars):
        size += 26
    size += len({c for c in chars if not c.isalnum()})
    return max(size, 2)


def estimate_bits(sid: str) -> float:
    n = len(sid)
    if n == 0:
        return 0.0
    per_char = math.log2(_alphabet(sid))
    bits = per_char
    for prev, cur in pairwise(sid):
        bits += _PREDICTABLE_BITS if abs(ord(cur) - ord(prev)) <= 1 else per_char
    shannon = -sum(c / n * math.log2(c / n) for c in Counter(sid).values())
    return min(bits, shannon * n)


def weak_session_id(ctx: Context) -> Evidence | None:
    if not ctx.first_sight or ctx.id_bits >= ctx.policy.min_session_id_bits:
        return None
    return {"estimated_bits": round(ctx.id_bits, 1), "min_bits": ctx.policy.min_session_id_bits}


INDICATORS = (
    Indicator("weak_session_id", frozenset({"login", "transaction", "elevate"}), weak_session_id),
)
