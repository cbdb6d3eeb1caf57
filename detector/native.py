"""Loading the compiled extension (``native/``): present, and of this code's interface.

Kept apart from :mod:`detector.fastpath` so that low-level modules (the entropy estimate)
can use the extension without importing the engine.
"""

from __future__ import annotations

import logging
import os
from types import ModuleType

log = logging.getLogger(__name__)

#: Set to ``0`` to run the Python code alone (comparisons, debugging).
ENV: str = "SESSIONWATCH_NATIVE"

#: The extension's interface version this code is written against (native/src/lib.rs).
ABI = 19


def native_module() -> ModuleType | None:
    """The extension when it is installed and of this code's interface version."""
    try:
        import sessionwatch_native
    except ImportError:
        log.debug("sessionwatch_native is not installed: the Python code runs instead")
        return None
    if getattr(sessionwatch_native, "ABI", None) != ABI:
        log.warning(
            "sessionwatch_native is a stale build (interface %s, expected %s): the Python "
            "code runs instead (same results, slower); run `make install` to rebuild it",
            getattr(sessionwatch_native, "ABI", "unknown"),
            ABI,
        )
        return None
    return sessionwatch_native


def native_wanted() -> ModuleType | None:
    """The extension, if installed and not turned off (``SESSIONWATCH_NATIVE=0``)."""
    if os.environ.get(ENV, "1") == "0":
        return None
    return native_module()
