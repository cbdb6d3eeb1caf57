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
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol, get_args

import msgspec

from detector.alerts import Alert
from detector.deadletter import DeadLetter, dead_letter
from detector.engine import Engine
from detector.events import Event, EventType, InvalidEvent, decode

AlertSink = Callable[[Alert], None]
DeadLetterSink = Callable[[DeadLetter], None]


@dataclass
class Summary:
    """Counts for the end-of-run table (and, later, the metrics)."""

    events: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    by_type: Counter[str] = field(default_factory=Counter)
    alerts: Counter[tuple[str, str]] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def invalid_total(self) -> int:
        return sum(self.invalid.values())

    @property
    def alerts_total(self) -> int:
        return sum(self.alerts.values())

    @property
    def rate(self) -> float:
        total = self.events + self.invalid_total
        return total / self.seconds if self.seconds > 0 else 0.0


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
                yield io.BufferedReader(gz, buffer_size=1 << 20)
        else:
            yield raw
    finally:
        raw.close()


class Replayer:
    """Drives the engine over recorded files; the sinks decide where output goes."""

    def __init__(self, engine: Engine, on_alert: AlertSink, on_dead_letter: DeadLetterSink) -> None:
        self.engine = engine
        self.on_alert = on_alert
        self.on_dead_letter = on_dead_letter
        self.summary = Summary()

    def feed(self, lines: Iterable[bytes], source: str) -> None:
        """Processes ``lines`` (with or without newlines); offsets are 1-based line numbers."""
        summary = self.summary
        process = self.engine.process
        on_alert = self.on_alert
        by_type: dict[str, int] = dict.fromkeys(get_args(EventType), 0)
        events = 0
        for offset, line in enumerate(lines, 1):
            if len(line) < 3 and not line.strip():
                continue  # blank line (JSON Lines tolerates a trailing one)
            ev = decode(line)
            if type(ev) is Event:
                events += 1
                by_type[ev.type] += 1
                alerts = process(ev, line)
                if alerts:
                    for alert in alerts:
                        summary.alerts[(alert.kind, alert.severity)] += 1
                        on_alert(alert)
            else:
                assert isinstance(ev, InvalidEvent)
                summary.invalid[ev.reason] += 1
                self.on_dead_letter(
                    dead_letter(ev, line.strip(), source, offset, self.engine.fingerprint)
                )
        summary.events += events
        summary.by_type.update({k: v for k, v in by_type.items() if v})

    def run(self, paths: Iterable[str], progress: Callable[[int], None] | None = None) -> Summary:
        start = time.perf_counter()
        for path in paths:
            with open_input(path) as fh:
                lines: Iterable[bytes] = fh if progress is None else _counting(fh, progress)
                self.feed(lines, "stdin" if path == "-" else path)
        self.summary.seconds += time.perf_counter() - start
        return self.summary


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

    def __call__(self, item: msgspec.Struct) -> None:
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
