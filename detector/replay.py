"""Replay of recorded logs: files -> decode -> engine -> alert and dead-letter sinks.

Inputs are read in the order given, line by line, as bytes (JSON Lines; ``.gz``
accepted; ``-`` is standard input). The engine runs on event time only, so the
same input and config always give byte-identical alert output.
"""

from __future__ import annotations

import gzip
import io
import sys
import time
import zlib
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, BinaryIO, Final, Protocol

import msgspec

from detector.alerts import Alert
from detector.deadletter import DeadLetter, dead_letter
from detector.engine import Engine
from detector.events import Event, InvalidEvent, decode
from detector.fastpath import add_counts, fast_path
from detector.metrics import Metrics

#: Lines per ``processing_seconds`` observation in replay.
BLOCK_LINES: Final = 4096

#: What reading a damaged input raises: a gzip stream cut short (EOFError), a file that
#: is not gzip after all (gzip.BadGzipFile, an OSError), corrupt data (zlib.error), a
#: failing disk (OSError).
READ_ERRORS: Final = (EOFError, OSError, zlib.error)

AlertSink = Callable[[Alert], None]
DeadLetterSink = Callable[[DeadLetter], None]


@dataclass
class Summary:
    """The end-of-run table, read from the same counters the metrics export."""

    metrics: Metrics = field(default_factory=Metrics)
    seconds: float = 0.0
    #: Vendor records of types with no meaning for sessions, skipped (``--format``).
    unmapped: Counter[str] = field(default_factory=Counter)
    #: Inputs that could not be read to their end, and why (see :func:`until_unreadable`).
    damaged: list[str] = field(default_factory=list)

    @property
    def events(self) -> int:
        return sum(self.metrics.events.values())

    @property
    def by_type(self) -> dict[str, int]:
        return {k: n for k, n in self.metrics.events.items() if n}

    @property
    def invalid(self) -> dict[str, int]:
        return {k: n for k, n in self.metrics.invalid.items() if n}

    @property
    def alerts(self) -> dict[tuple[str, str], int]:
        return dict(self.metrics.alerts)

    @property
    def invalid_total(self) -> int:
        return sum(self.metrics.invalid.values())

    @property
    def alerts_total(self) -> int:
        return sum(self.metrics.alerts.values())

    @property
    def rate(self) -> float:
        total = self.events + self.invalid_total
        return total / self.seconds if self.seconds > 0 else 0.0


class _Decompressed(io.RawIOBase):
    """A gzip stream as raw reads of whatever one read decompresses (``read1``).

    A buffered reader straight over ``GzipFile`` asks it for a full buffer at a time, and
    a stream cut short then raises with up to a megabyte of good lines decompressed but
    not handed over; this way only what follows the cut is lost.
    """

    def __init__(self, gz: gzip.GzipFile) -> None:
        self._gz = gz

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._gz.read1(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@contextmanager
def open_input(path: str) -> Iterator[BinaryIO]:
    """Opens a recorded log for binary line reading; ``-`` is stdin, ``.gz`` is gunzipped."""
    if path == "-":
        yield sys.stdin.buffer
        return
    raw = open(path, "rb")  # noqa: SIM115 - closed below, wrapped maybe by gzip
    try:
        if path.endswith(".gz"):
            with gzip.GzipFile(fileobj=raw) as gz:
                yield io.BufferedReader(_Decompressed(gz), buffer_size=1 << 20)
        else:
            yield raw
    finally:
        raw.close()


class Replayer:
    """Drives the engine over recorded files; the sinks decide where output goes."""

    def __init__(
        self,
        engine: Engine,
        on_alert: AlertSink,
        on_dead_letter: DeadLetterSink,
        metrics: Metrics | None = None,
        *,
        native: bool = True,
    ) -> None:
        """``native=False`` keeps every line on the Python path (see detector.fastpath)."""
        self.engine = engine
        self.on_alert = on_alert
        self.on_dead_letter = on_dead_letter
        self.metrics = metrics or Metrics(census=engine.census)
        self.summary = Summary(self.metrics)
        self._fast = fast_path(engine, self.metrics.lag.bounds) if native else None

    def feed(self, lines: Iterable[bytes], source: str) -> None:
        """Processes ``lines`` (with or without newlines); offsets are 1-based line numbers.

        Lines go in blocks of :data:`BLOCK_LINES`: the compiled path (when it applies)
        takes the routine ones, the Python path the rest, in order. Metrics are updated
        per block (a scrape during a long replay sees progress); ``processing_seconds``
        observes each block.
        """
        m = self.metrics
        process = self.engine.process
        on_alert = self.on_alert
        by_type = m.events
        lag = m.lag
        lag_counts = lag.counts
        lag_bounds = lag.bounds
        count_alert = m.count_alert
        fast = self._fast
        fast_run = fast.run if fast is not None else None
        clock = time.perf_counter
        block_start = clock()
        base = 0
        it = iter(lines)
        while block := list(islice(it, BLOCK_LINES)):
            now = time.time()
            lag_sum = 0.0
            n = len(block)
            i = 0
            while i < n:
                if fast_run is not None:
                    i = fast_run(block, i, now)
                    if i == n:
                        break
                line = block[i]
                i += 1
                if len(line) < 3 and not line.strip():
                    continue  # blank line (JSON Lines tolerates a trailing one)
                ev = decode(line, now)
                if type(ev) is Event:
                    by_type[ev.type] += 1
                    late = now - ev.epoch
                    lag_counts[bisect_left(lag_bounds, late)] += 1
                    lag_sum += late
                    alerts = process(ev, line)
                    if alerts:
                        for alert in alerts:
                            count_alert(alert.kind, alert.severity)
                            on_alert(alert)
                else:
                    assert isinstance(ev, InvalidEvent)
                    m.count_invalid(ev.reason)
                    self.on_dead_letter(
                        dead_letter(ev, line.strip(), source, base + i, self.engine.fingerprint)
                    )
            if fast is not None:
                add_counts(fast, m)
            lag.sum += lag_sum
            base += n
            t = clock()
            m.processing.observe(t - block_start)
            block_start = t
        if fast is not None:
            fast.flush_all()  # the store's session objects up to date for whoever reads them

    def run(
        self,
        paths: Iterable[str],
        progress: Callable[[int], None] | None = None,
        frame: Callable[[BinaryIO], Iterable[bytes]] | None = None,
    ) -> Summary:
        """Replays files; ``frame`` turns an opened file into SPEC.md lines (adapters)."""
        start = time.perf_counter()
        for path in paths:
            with open_input(path) as fh:
                lines = until_unreadable(
                    fh if frame is None else frame(fh), path, self.summary.damaged
                )
                if progress is not None:
                    lines = _counting(lines, progress)
                self.feed(lines, "stdin" if path == "-" else path)
        self.summary.seconds += time.perf_counter() - start
        return self.summary


def until_unreadable(lines: Iterable[bytes], path: str, damaged: list[str]) -> Iterator[bytes]:
    """``lines`` up to where the input stops being readable; the reason then goes to
    ``damaged``. A log cut off mid-copy still has its head processed (and written out),
    and the run can say what it could not read instead of dying with a traceback."""
    try:
        yield from lines
    except READ_ERRORS as err:
        damaged.append(f"{'stdin' if path == '-' else path}: {err}")


def _counting(fh: Iterable[bytes], progress: Callable[[int], None]) -> Iterator[bytes]:
    """Reports bytes read every 64k lines: cheap enough to leave on for big inputs."""
    done = 0
    for n, line in enumerate(fh, 1):
        done += len(line)
        if n & 0xFFFF == 0:
            progress(done)
        yield line
    progress(done)


class BinaryOut(Protocol):
    def write(self, data: bytes | bytearray, /) -> int: ...
    def flush(self) -> None: ...


class JsonLinesWriter:
    """Writes msgspec structs as JSON Lines to a binary stream."""

    def __init__(self, out: BinaryOut) -> None:
        self._out = out
        self._encoder = msgspec.json.Encoder()
        self._buf = bytearray()
        self.count = 0

    def __call__(self, item: msgspec.Struct | dict[str, Any]) -> None:
        self._encoder.encode_into(item, self._buf, -1)
        self._buf.extend(b"\n")
        self.count += 1
        if len(self._buf) > 1 << 16:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            self._out.write(self._buf)
            self._buf.clear()
        self._out.flush()
