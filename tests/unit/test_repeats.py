"""Repeated Kafka client complaints: the first of each kind logged, the rest counted."""

from __future__ import annotations

import logging

import pytest

from detector.stream.repeats import HeldBackRepeats, hold_back_repeats


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _lines(
    caplog: pytest.LogCaptureFixture, held: HeldBackRepeats, name: str = "t.repeats"
) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.addFilter(held)
    caplog.set_level(logging.DEBUG, logger=name)
    return logger


def test_repeats_within_the_window_are_counted_and_reported_after_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    held = HeldBackRepeats(window_s=30, clock=clock)
    log = _lines(caplog, held)
    try:
        for node in range(50):  # different arguments, the same kind of line
            log.error("Unable connect to node with id %s: %s", node, "refused")
            clock.now += 0.5  # 25 s in all: inside the window
        log.error("Unable to update metadata from [%s]", 1)  # another kind: logged at once
        clock.now += 10
        log.error("Unable connect to node with id %s: %s", 7, "refused")
    finally:
        log.removeFilter(held)
    assert [r.getMessage() for r in caplog.records] == [
        "Unable connect to node with id 0: refused",
        "Unable to update metadata from [1]",
        "Unable connect to node with id 7: refused "
        "(and 49 more like it held back in the last 35 s)",
    ]


def test_lower_levels_and_other_loggers_are_untouched(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    held = HeldBackRepeats(window_s=30, clock=clock)
    log = _lines(caplog, held)
    other = logging.getLogger("t.repeats.other")
    other.addFilter(held)
    try:
        for _ in range(3):
            log.info("joined group %s", "g")
            log.warning("Marking the coordinator dead")
            other.warning("Marking the coordinator dead")
    finally:
        log.removeFilter(held)
        other.removeFilter(held)
    assert [(r.name, r.levelname) for r in caplog.records] == [
        ("t.repeats", "INFO"),
        ("t.repeats", "WARNING"),
        ("t.repeats.other", "WARNING"),
        ("t.repeats", "INFO"),
        ("t.repeats", "INFO"),
    ]


def test_installed_once_on_every_client_logger() -> None:
    import aiokafka.consumer.fetcher  # noqa: F401 - its logger must exist

    hold_back_repeats("aiokafka")
    hold_back_repeats("aiokafka")  # as a second app in one process would
    for name in ("aiokafka", "aiokafka.consumer.fetcher", "aiokafka.conn"):
        filters = [f for f in logging.getLogger(name).filters if isinstance(f, HeldBackRepeats)]
        assert len(filters) == 1, name


def test_the_count_line_formats_through_the_worker_s_log_formatter() -> None:
    """mode's formatter (Faust's worker log) turns non-tuple args into a tuple: a count
    line with args None then failed to format ("not all arguments converted"), and the
    logging module printed a traceback instead of the line."""
    from mode.utils.logging import ExtensionFormatter

    clock = Clock()
    held = HeldBackRepeats(window_s=30, clock=clock)
    records: list[logging.LogRecord] = []
    for _ in range(3):
        record = logging.LogRecord(
            "aiokafka", logging.ERROR, __file__, 1, "Coordinator failed: %s", ("E15",), None
        )
        if held.filter(record):
            records.append(record)
        clock.now += 20
    formatter = ExtensionFormatter(fmt="%(message)s")
    assert [formatter.format(r) for r in records] == [
        "Coordinator failed: E15",
        "Coordinator failed: E15 (and 1 more like it held back in the last 40 s)",
    ]
