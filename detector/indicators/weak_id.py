"""Session IDs an attacker could guess.

The estimate is deliberately simple and conservative: each character costs the
log2 of the alphabet the ID draws from, except a character that repeats or
steps by one from the previous one, which costs log2(3) (it is predictable from
its neighbour), and the total never exceeds the ID's empirical Shannon entropy
times its length (low variety). A 32-hex-digit ServiceNow ID scores about 120
bits; counters and padded numbers score far below 64. It runs on every new ID,
so it sticks to C-level set, map and count operations.

>>> round(estimate_bits("SESSION0001234"))
44
>>> estimate_bits("0123456789ABCDEF" * 2) < 64 < estimate_bits("9F3A1C7E5B2D48A6C0E1F7B3D95A2C4E")
True
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable
from operator import sub
from typing import Any, Final

from detector.indicators.base import Context, Evidence, Indicator
from detector.native import native_module

_HEX: Final = frozenset("0123456789abcdefABCDEF")
_HEX_LOWER: Final = frozenset("abcdef")
_HEX_UPPER: Final = frozenset("ABCDEF")
_DIGITS: Final = frozenset(string.digits)
_LOWER: Final = frozenset(string.ascii_lowercase)
_UPPER: Final = frozenset(string.ascii_uppercase)
_ALNUM: Final = _DIGITS | _LOWER | _UPPER
_PREDICTABLE_BITS: Final = math.log2(3)
#: c * log2(c) for the character counts of IDs up to 255 characters (0 for c <= 1).
_XLOG2X: Final = tuple(c * math.log2(c) if c > 1 else 0.0 for c in range(256))


def _alphabet(chars: set[str]) -> int:
    """Size of the alphabet the ID seems drawn from."""
    if chars <= _HEX and not (chars & _HEX_LOWER and chars & _HEX_UPPER):
        return 16
    size = len(chars - _ALNUM)
    if chars & _DIGITS:
        size += 10
    if chars & _LOWER:
        size += 26
    if chars & _UPPER:
        size += 26
    return max(size, 2)


#: log2 of alphabet sizes (the compiled estimate takes these very values).
_LOG2: Final = tuple(math.log2(a) if a else 0.0 for a in range(256))


def _entropy() -> Any:
    """The compiled estimate (native/), bit-identical by construction and test."""
    native = native_module()
    if native is None:
        return None
    return native.Entropy(list(_XLOG2X), list(_LOG2), _PREDICTABLE_BITS)


#: The compiled estimator (``sessionwatch_native.Entropy``), or None without native/.
ENTROPY: Final = _entropy()
_COMPILED: Final[Callable[[str], float | None] | None] = None if ENTROPY is None else ENTROPY.bits


def estimate_bits(sid: str) -> float:
    """Estimated bits of guessing work in ``sid`` (compiled when available, ~20x faster)."""
    if _COMPILED is not None and sid.isascii():  # (a lone surrogate has no UTF-8)
        bits = _COMPILED(sid)
        if bits is not None:
            return bits
    return estimate_bits_py(sid)


def estimate_bits_py(sid: str) -> float:
    n = len(sid)
    if n == 0:
        return 0.0
    chars = set(sid)
    per_char = math.log2(_alphabet(chars))
    # Code points; an ASCII ID's bytes are its code points, without a Python-level map.
    codes: bytes | list[int] = sid.encode("ascii") if sid.isascii() else list(map(ord, sid))
    steps = list(map(sub, codes[1:], codes[:-1]))
    near = steps.count(0) + steps.count(1) + steps.count(-1)
    bits = per_char * (n - near) + _PREDICTABLE_BITS * near
    # n * Shannon entropy = n*log2(n) - sum(c*log2(c)) over the character counts.
    counts = map(sid.count, chars)
    if n < len(_XLOG2X):
        # Summed in ascending order: one order, whatever the set's (and the compiled one's).
        shannon_total = n * math.log2(n) - sum(sorted(map(_XLOG2X.__getitem__, counts)))
    else:
        shannon_total = n * math.log2(n) - sum(c * math.log2(c) for c in counts if c > 1)
    return min(bits, shannon_total)


def weak_session_id(ctx: Context) -> Evidence | None:
    if not ctx.first_sight or ctx.id_bits >= ctx.policy.min_session_id_bits:
        return None
    return {"estimated_bits": round(ctx.id_bits, 1), "min_bits": ctx.policy.min_session_id_bits}


INDICATORS = (
    Indicator(
        "weak_session_id",
        frozenset({"login", "transaction", "elevate"}),
        weak_session_id,
        gate="first_sight",
    ),
)
