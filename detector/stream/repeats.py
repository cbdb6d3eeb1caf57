"""One line per kind of Kafka client complaint per window, with a count of the rest.

While the broker is down, aiokafka logs every failed reconnect, metadata update, fetch
and coordinator look-up: about 75 ERROR lines a second here, tens of thousands for a
few minutes' outage, which bury everything else a SOC reads in the worker's log (and
cost their log pipeline). The first line of each kind goes through at once; repeats of
it within the window are held back and counted, and the first one after the window
says how many were.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

#: Seconds during which repeats of a logged line are counted instead of logged.
WINDOW_S = 30.0


class HeldBackRepeats(logging.Filter):
    """Keyed by logger and message template (not the formatted text: a node id or an
    address differs between otherwise equal lines). Levels below WARNING pass untouched."""

    def __init__(self, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.window_s = window_s
        self.clock = clock
        # key -> (when its window started, repeats held back in it)
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, str(record.msg))
        now = self.clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.window_s:
            self._seen[key] = (seen[0], seen[1] + 1)
            return False
        self._seen[key] = (now, 0)
        if seen is not None and seen[1]:
            record.msg = (
                f"{record.getMessage()} (and {seen[1]} more like it held back in the last "
                f"{now - seen[0]:.0f} s)"
            )
            # An empty tuple, not None: mode's formatter (the worker's log) wraps a
            # non-tuple in one, and formatting the text with (None,) then fails.
            record.args = ()
        return True


def hold_back_repeats(prefix: str = "aiokafka", window_s: float = WINDOW_S) -> HeldBackRepeats:
    """Installs one shared filter on every logger under ``prefix`` that exists now (a
    logger's filters do not see its children's records, so each gets it)."""
    held = HeldBackRepeats(window_s)
    below = [n for n in logging.root.manager.loggerDict if n.startswith(prefix + ".")]
    for name in [prefix, *below]:
        logger = logging.getLogger(name)
        if not any(isinstance(f, HeldBackRepeats) for f in logger.filters):
            logger.addFilter(held)
    return held
