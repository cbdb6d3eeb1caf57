"""Strict decoding: every bad record gets a reason, every good one a checked Event."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from detector.events import MAX_AHEAD_S, MAX_LINE_BYTES, Event, InvalidEvent, decode


def ok(line: bytes) -> Event:
    ev = decode(line)
    assert isinstance(ev, Event), ev
    return ev


def bad(line: bytes) -> str:
    ev = decode(line)
    assert isinstance(ev, InvalidEvent), ev
    return ev.reason


def test_rfc3339_and_epoch_times_agree() -> None:
    a = ok(b'{"event_id":"1","ts":"2026-11-22T11:00:00+01:00","type":"unlock","user":"u"}')
    b = ok(b'{"event_id":"1","ts":1795341600,"type":"unlock","user":"u"}')
    assert a.epoch == b.epoch == 1795341600.0


def test_defaults_and_extras() -> None:
    ev = ok(b'{"event_id":"1","ts":1,"type":"transaction","session_id":"S","ip":"::1","x":{"y":1}}')
    assert ev.scheme == "https" and ev.guest is False and ev.user is None and ev.is_guest


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"not json", "not_json"),
        (b'{"event_id":"1"', "not_json"),
        (b"[1,2]", "not_object"),
        (b'{"ts":1,"type":"unlock","user":"u"}', "missing_field"),
        (b'{"event_id":"1","type":"unlock","user":"u"}', "missing_field"),
        (b'{"event_id":"1","ts":1,"type":"unlock"}', "missing_field"),
        (b'{"event_id":"1","ts":1,"type":"transaction","ip":"1.2.3.4"}', "missing_field"),
        (b'{"event_id":"1","ts":1,"type":"login","session_id":"S","user":"u"}', "missing_field"),
        (b'{"event_id":"","ts":1,"type":"unlock","user":"u"}', "missing_field"),
        (b'{"event_id":"1","ts":1,"type":"explode","user":"u"}', "unknown_type"),
        (b'{"event_id":1,"ts":1,"type":"unlock","user":"u"}', "wrong_type"),
        (b'{"event_id":"1","ts":1,"type":"unlock","user":"u","guest":"yes"}', "wrong_type"),
        (b'{"event_id":"1","ts":1,"type":"unlock","user":"u","scheme":"ftp"}', "wrong_type"),
        (b'{"event_id":"1","ts":"yesterday","type":"unlock","user":"u"}', "bad_time"),
        (b'{"event_id":"1","ts":"2026-11-22T10:00:00","type":"unlock","user":"u"}', "bad_time"),
        (b'{"event_id":"1","ts":-5,"type":"unlock","user":"u"}', "bad_time"),
        (b'{"event_id":"1","ts":1e12,"type":"unlock","user":"u"}', "bad_time"),
        (b'{"event_id":"1","ts":true,"type":"unlock","user":"u"}', "bad_time"),
        (
            b'{"event_id":"1","ts":1,"type":"login","session_id":"S","user":"u","ip":"10.0.0.300"}',
            "bad_ip",
        ),
        (b'{"event_id":"1","ts":1,"type":"logout","session_id":"S","user":"u","ip":"x"}', "bad_ip"),
    ],
)
def test_reasons(line: bytes, reason: str) -> None:
    assert bad(line) == reason


def test_oversized_line_is_refused_unread() -> None:
    line = b'{"event_id":"1","ts":1,"type":"unlock","user":"' + b"u" * MAX_LINE_BYTES + b'"}'
    assert bad(line) == "oversized"


def test_a_line_s_ending_does_not_count_toward_the_size_limit() -> None:
    """Replay's lines keep their newline, Kafka's records do not: one record, one verdict."""
    head, tail = b'{"event_id":"1","ts":1,"type":"unlock","user":"', b'"}'
    fits = head + b"u" * (MAX_LINE_BYTES - len(head) - len(tail)) + tail
    assert len(fits) == MAX_LINE_BYTES
    assert ok(fits + b"\r\n").user == ok(fits).user
    over = head + b"u" + fits[len(head) :]
    refused = decode(over + b"\n")
    assert isinstance(refused, InvalidEvent)
    assert refused.message == f"record of {MAX_LINE_BYTES + 1} bytes exceeds {MAX_LINE_BYTES}"


def test_own_epoch_field_is_just_an_extra() -> None:
    ev = ok(b'{"event_id":"1","ts":5,"type":"unlock","user":"u","epoch":"whatever"}')
    assert ev.epoch == 5.0


@given(st.floats(-1e9, 4.2e9))
def test_alert_times_are_datetime_s_rfc3339(epoch: float) -> None:
    """The alert time formatter (fast, cached per day) writes what datetime writes."""
    from datetime import UTC, datetime

    from detector.alerts import rfc3339

    whole = int(epoch // 1)
    micros = round((epoch - whole) * 1_000_000)
    if micros == 1_000_000:
        whole, micros = whole + 1, 0
    expected = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    expected += f".{micros:06d}".rstrip("0") if micros else ""
    assert rfc3339(epoch) == expected + "Z"


def test_an_event_time_ahead_of_the_host_s_clock_is_refused_past_the_margin() -> None:
    """Given the host's clock (replay and the worker give it), an event more than
    MAX_AHEAD_S after it is a bad time; without it (routing, ``produce``) it is not."""
    now = 1_800_000_000.0

    def line(ts: float) -> bytes:
        return b'{"event_id":"1","ts":%r,"type":"unlock","user":"u"}' % ts

    assert isinstance(decode(line(now + MAX_AHEAD_S), now), Event)
    late = decode(line(now + MAX_AHEAD_S + 1.5), now)
    assert isinstance(late, InvalidEvent) and late.reason == "bad_time"
    assert "302 s ahead of this host's clock (at most 300 s)" in late.message
    assert isinstance(decode(line(now + 10 * MAX_AHEAD_S)), Event)
