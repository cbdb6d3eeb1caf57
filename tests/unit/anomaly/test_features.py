"""Behaviour features: each one against its meaning, and the bounds of the baseline."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from detector.anomaly.features import (
    FEATURES,
    MAX_PATHS,
    Baseline,
    hour_of_week,
    hour_rarity,
    is_checkpoint,
    observe,
    open_profile,
    path_shape,
)
from detector.events import Event, decode
from tests.helpers import CHROME, CHROME_ANDROID, T0

MONDAY = 1_793_577_600.0  # 2026-11-02T00:00Z


def event(url: str = "/incident.do", size: int | None = None, ua: str = CHROME) -> Event:
    raw = (
        b'{"event_id":"e","ts":1795334400,"type":"transaction","session_id":"S",'
        b'"user":"alice","ip":"10.1.2.3","user_agent":"'
        + ua.encode()
        + b'","url":"'
        + url.encode()
        + b'"'
        + (b',"response_bytes":%d' % size if size is not None else b"")
        + b"}"
    )
    ev = decode(raw)
    assert isinstance(ev, Event)
    return ev


def feature(row: list[float], name: str) -> float:
    return row[FEATURES.index(name)]


def test_path_shape_drops_queries_and_record_ids() -> None:
    assert path_shape("/incident.do?sys_id=abc") == "/incident.do"
    assert path_shape("/api/now/table/incident/9d385017c611228701d22104cc95c371") == (
        "/api/now/table/incident/{id}"
    )
    assert path_shape("/api/now/table/incident/42") == "/api/now/table/incident/{id}"
    assert path_shape("/api/now/table/incident") == "/api/now/table/incident"


def test_hour_of_week_starts_on_monday() -> None:
    assert hour_of_week(MONDAY) == 0
    assert hour_of_week(MONDAY + 3600 * 30) == 30  # Tuesday 06:00
    assert hour_of_week(MONDAY + 7 * 86400) == 0


def test_hour_rarity_is_zero_at_usual_hours_and_one_far_from_them() -> None:
    # Weekdays 09:00-17:00, ten requests an hour, for a week.
    hours = {d * 24 + h: 10 for d in range(5) for h in range(9, 17)}
    events = sum(hours.values())
    tuesday_10 = MONDAY + 86400 + 10 * 3600
    assert hour_rarity(hours, events, tuesday_10) == 0.0
    assert hour_rarity(hours, events, MONDAY + 86400 + 3 * 3600) == 1.0  # 03:00
    edge = hour_rarity(hours, events, MONDAY + 86400 + 19 * 3600)  # 19:00, near the end
    assert 0.0 < edge < 1.0
    # Saturday at 10:00 has no Saturday history, but the same hour on other days counts
    # (half the weight): a week of history cannot yet tell what weekends look like.
    saturday = hour_rarity(hours, events, MONDAY + 5 * 86400 + 10 * 3600)
    assert saturday < edge


def test_hour_rarity_leaves_out_the_sessions_own_requests() -> None:
    night = hour_of_week(MONDAY + 3 * 3600)
    hours = {9: 100, night: 20}
    assert hour_rarity(hours, 120, MONDAY + 3 * 3600) < 0.5
    assert hour_rarity(hours, 120, MONDAY + 3 * 3600, leave_out={night: 20}) == 1.0


def test_checkpoints() -> None:
    assert [n for n in range(1, 70) if is_checkpoint(n)] == [1, 4, 16, 32, 48, 64]


def mature() -> Baseline:
    """A user with four sessions of history: two pages, two-minute pace, 20 kB pages."""
    base = Baseline()
    for s in range(4):
        prof = open_profile(base, event(), T0, b"net", min_sessions=3)
        for i in range(30):
            ts = MONDAY + s * 86400 + 9 * 3600 + i * 120
            observe(
                base,
                prof,
                event(("/incident.do", "/home.do")[i % 2], 20_000),
                ts,
                None if i == 0 else 120.0,
                i * 120.0,
            )
    return base


def session(
    base: Baseline,
    gaps: list[float],
    urls: list[str],
    size: int = 20_000,
    start: float = MONDAY + 4 * 86400 + 10 * 3600,
) -> list[list[float]]:
    prof = open_profile(base, event(), start + gaps[0], b"net", min_sessions=3)
    rows = []
    t = start
    for i, (gap, url) in enumerate(zip(gaps, urls, strict=True)):
        t += gap
        row = observe(base, prof, event(url, size), t, None if i == 0 else gap, t - start)
        if row is not None:
            rows.append(row)
    return rows


def test_new_users_are_not_scored() -> None:
    base = Baseline()
    prof = open_profile(base, event(), T0, b"net", min_sessions=3)
    assert not prof.scored
    assert observe(base, prof, event(), T0, None, 0.0) is None
    assert base.sessions == 1 and base.events == 1


def test_an_ordinary_session_looks_ordinary() -> None:
    rows = session(mature(), [120.0] * 20, ["/incident.do", "/home.do"] * 10)
    assert len(rows) == 3  # requests 1, 4 and 16
    for row in rows:
        assert feature(row, "pace") < 0.1
        assert feature(row, "burstiness") == 0.0
        assert feature(row, "new_paths") == 0.0
        assert feature(row, "hour_rarity") == feature(row, "start_rarity") == 0.0
        assert feature(row, "new_network") == feature(row, "new_browser") == 0.0
        assert feature(row, "volume") < 0.1


def test_a_scripted_burst_shows_in_pace_burstiness_and_volume() -> None:
    rows = session(mature(), [1.0] * 20, ["/incident.do"] * 20, size=5_000_000)
    last = rows[-1]
    assert feature(last, "pace") > math.log(20)  # over 20 times faster than usual
    assert feature(last, "burstiness") > 0.8
    assert feature(last, "volume") > 4.0
    assert feature(last, "session_events") == math.log1p(16)


def test_slower_and_quieter_than_usual_is_not_suspicious() -> None:
    rows = session(mature(), [900.0] * 16, ["/incident.do"] * 16, size=100)
    assert feature(rows[-1], "pace") == 0.0
    assert feature(rows[-1], "volume") == 0.0


def test_enumeration_shows_as_new_paths() -> None:
    urls = [f"/table_{i}_list.do" for i in range(16)]
    rows = session(mature(), [120.0] * 16, urls)
    assert feature(rows[-1], "new_paths") > 0.8


def test_night_time_is_rare_for_a_day_worker() -> None:
    rows = session(mature(), [120.0] * 4, ["/incident.do"] * 4, start=MONDAY + 4 * 86400 + 3 * 3600)
    assert all(feature(r, "hour_rarity") == 1.0 for r in rows)
    assert all(feature(r, "start_rarity") == 1.0 for r in rows)


def test_new_network_and_browser_are_relative_to_the_user() -> None:
    base = mature()
    prof = open_profile(base, event(ua=CHROME_ANDROID), T0, b"other", min_sessions=3)
    assert prof.new_network and prof.new_browser
    again = open_profile(base, event(ua=CHROME_ANDROID), T0, b"other", min_sessions=3)
    assert not again.new_network and not again.new_browser


def test_the_baseline_stays_bounded() -> None:
    base = mature()
    session(base, [60.0] * 200, [f"/page_{i}.do" for i in range(200)])
    assert len(base.paths) == MAX_PATHS
    assert len(base.hours) <= 168


def _hour_rarity_by_kernel(
    hours: dict[int, int], events: int, ts: float, own: dict[int, int]
) -> float:
    """The definition, walked hour by hour of the kernel (the reference)."""
    from detector.anomaly.features import _KERNEL, _KERNEL_SUM, hour_of_week

    events -= sum(own.values())
    if events <= 0:
        return 1.0
    how = hour_of_week(ts)
    week = day = 0.0
    for d, w in _KERNEL:
        for k in range(7):
            h = (how + d + 24 * k) % 168
            c = hours.get(h, 0) - own.get(h, 0)
            if c:
                day += w * c
                if k == 0:
                    week += w * c
    intensity = (84.0 * week + 12.0 * day) / (_KERNEL_SUM * events)
    if intensity <= 0.0:
        return 1.0
    return 0.8 * min(1.0, -math.log10(intensity + 0.001) / 3.0) if intensity < 1.0 else 0.0


HOURS = st.dictionaries(st.integers(0, 167), st.integers(0, 10**6), max_size=60)


@settings(max_examples=500)
@given(HOURS, HOURS, st.integers(-5, 10**7), st.floats(0, 4e9))
def test_hour_rarity_is_the_kernel_walk_bit_for_bit(
    hours: dict[int, int], own: dict[int, int], events: int, ts: float
) -> None:
    """One pass over the user's hours gives the same double as the 49-hour kernel walk
    (the sums are exact in eighths), with and without a session's own hours left out."""
    inside = {h: min(n, hours.get(h, n)) for h, n in own.items()}
    for leave_out in ({}, inside, own):
        got = hour_rarity(hours, events, ts, leave_out)
        assert got == _hour_rarity_by_kernel(hours, events, ts, leave_out)
