"""Behaviour features: how a session step compares with its user's own habits.

A stolen session used from the victim's network with the victim's browser passes
every rule; what gives it away is behaviour. Each feature therefore measures a
*departure from this user's baseline*, not an absolute level (an admin's normal
pace is a clerk's bulk export). All features are one-sided where only one
direction is suspicious: a user who is slower or quieter than usual is not a sign
of theft, and a model that saw both tails would alert on lunch breaks.

=================  ==========================================================
feature            meaning (``ln`` ratios are 0 at the user's usual level)
=================  ==========================================================
``pace``           ln(user's usual gap between requests / the session's
                   recent mean gap), ≥ 0: 2.3 is ten times faster than usual
``burstiness``     recent share of gaps under 3 s (scripts, not people)
``new_paths``      recent share of requests to paths this user never used
``hour_rarity``    1 if the user was never active within ±3 hours of this hour
                   (of the week or of any day; this session's own requests
                   left out); else 0.8 × −log10(activity near this hour,
                   relative to a flat spread, + 0.001) / 3, at most 0.8: 0 at
                   or above an average hour, ~0.27 at a tenth of it. The gap
                   keeps "never" apart from "rarely" for the forest
``start_rarity``   ``hour_rarity`` of the session's first request: a login at
                   night differs from a day's session running late
``new_network``    the session's login network (the ip_change prefix) is
                   new for this user (0/1)
``new_browser``    the session's browser family and OS are new (0/1)
``volume``         ln(1 + recent mean response bytes) − the user's usual,
                   ≥ 0; 0 when events carry no ``response_bytes``
``session_age``    ln(1 + minutes since login)
``session_events`` ln(1 + requests so far in the session)
=================  ==========================================================

A session step is scored at its 1st, 4th and 16th request and every 16th after
that (:func:`is_checkpoint`): enough to see a burst while it lasts, and few
enough that scoring costs little next to the rules. "Recent" is the window of
requests since the previous checkpoint (at most 16), so a burst in the middle
of a long, ordinary session stands out instead of being averaged away; a window
is a handful of counters, so a request costs a few additions, and logarithms are
taken once per window. The user's baseline moves slowly (``SLOW`` per request)
and each session compares with the baseline as it was when the session began,
so an attack cannot teach the model its own pace while it runs. Users with fewer than
``min_user_sessions`` sessions of history are not scored at all: everything is
new for a new user.

>>> path_shape("/api/now/table/incident/9d385017c611228701d22104cc95c371?sysparm_limit=1")
'/api/now/table/incident/{id}'
>>> hour_of_week(1793577600.0)  # 2026-11-02T00:00Z, a Monday
0
"""

from __future__ import annotations

import math
from typing import Final, TypeVar

import msgspec

from detector.events import Event
from detector.useragent import classify

#: Feature names, in the order of a feature row.
FEATURES: Final = (
    "pace",
    "burstiness",
    "new_paths",
    "hour_rarity",
    "start_rarity",
    "new_network",
    "new_browser",
    "volume",
    "session_age",
    "session_events",
)

#: Weight of one request in the user's baseline (~50 requests of memory).
SLOW: Final = 1 / 50
#: Gaps under this many seconds count as bursts.
BURST_GAP_S: Final = 3.0
#: Bounds that keep a user's baseline small whatever the traffic.
MAX_PATHS: Final = 48
MAX_NETWORKS: Final = 8
MAX_BROWSERS: Final = 4
#: A user's typical gap before any is seen (ln seconds; about two minutes).
_PRIOR_LOG_GAP: Final = math.log(120.0)
# Hour-of-week smoothing: weights by distance in hours; 1970-01-01 was a Thursday.
_KERNEL: Final = ((0, 1.0), (1, 0.5), (-1, 0.5), (2, 0.25), (-2, 0.25), (3, 0.125), (-3, 0.125))
_KERNEL_SUM: Final = sum(w for _, w in _KERNEL)
THURSDAY_HOUR: Final = 72


def _near_weights(delta: int) -> tuple[int, int]:
    """The kernel weight in eighths of an hour ``delta`` hours later in the week: on any
    day (the same time give or take three hours), and on the same day of the week."""
    d = (delta + 12) % 24 - 12
    if not -3 <= d <= 3:
        return 0, 0
    w8 = int(8 * dict(_KERNEL)[d])
    return w8, w8 if (delta - d) % 168 == 0 else 0


#: ``_near_weights`` for every hour offset of the week.
_NEAR: Final = tuple(_near_weights(delta) for delta in range(168))

_T = TypeVar("_T")


class Baseline(msgspec.Struct, gc=False):
    """One user's habits, bounded in size (part of the per-user state)."""

    sessions: int = 0
    events: int = 0
    log_gap: float = _PRIOR_LOG_GAP
    log_bytes: float | None = None
    hours: dict[int, int] = msgspec.field(default_factory=dict)  # hour of week -> requests
    paths: dict[str, None] = msgspec.field(default_factory=dict)  # ordered: oldest first
    networks: tuple[bytes, ...] = ()  # tuples: see UserState.sessions
    browsers: tuple[str, ...] = ()


class Profile(msgspec.Struct, gc=False):
    """One session: its current window of requests and the baseline it is compared with."""

    scored: bool  # the user was mature when the session began
    base_gap: float
    base_bytes: float | None
    new_network: bool
    new_browser: bool
    start_rarity: float = 0.0
    n: int = 0
    #: The window since the previous checkpoint: its start, requests, gaps, gaps under
    #: BURST_GAP_S, requests to new paths, bytes and requests that reported bytes.
    since: float = 0.0
    w_requests: int = 0
    w_gaps: int = 0
    w_fast: int = 0
    w_new: int = 0
    w_bytes: int = 0
    w_sized: int = 0
    #: Requests not yet added to the hour counters: their hour of week and count.
    hour: int = -1
    hour_count: int = 0
    #: This session's own requests per hour of week (left out of its hour rarity).
    own_hours: dict[int, int] = msgspec.field(default_factory=dict)


def path_shape(url: str) -> str:
    """The request path without query and record ids: what "a page" means for a user."""
    shape = _shapes.get(url)
    if shape is None:
        if len(_shapes) >= _SHAPE_CACHE_MAX:
            _shapes.clear()
        shape = _shapes[url] = _path_shape(url)
    return shape


# Most requests repeat a URL seen before; a dict emptied when full beats an LRU here.
_shapes: dict[str, str] = {}
_SHAPE_CACHE_MAX: Final = 65_536


def _path_shape(url: str) -> str:
    path = url.split("?", 1)[0].split("#", 1)[0]
    head, _, last = path.rpartition("/")
    if head and len(last) >= 16 and all(c in "0123456789abcdefABCDEF-" for c in last):
        return f"{head}/{{id}}"
    if last.isdigit():
        return f"{head}/{{id}}"
    return path


def hour_of_week(ts: float) -> int:
    """Hours since Monday 00:00 UTC, 0..167."""
    return (int(ts // 3600) + THURSDAY_HOUR) % 168


def hour_rarity(
    hours: dict[int, int], events: int, ts: float, leave_out: dict[int, int] | None = None
) -> float:
    """1 for an hour this user never works near, falling towards 0 for their usual hours.

    The hour of the week matters (weekends), but a week of history has seen each
    weekday once, so the same hour on any day counts too. ``leave_out`` removes
    the session's own requests: a night-time session must not make night usual.
    """
    own = leave_out or {}
    events -= sum(own.values())
    if events <= 0:
        return 1.0
    how = hour_of_week(ts)
    # Sum of weight x count over the hours within +-3 of this hour, on this day of the
    # week (week) and on any (day). Weights are 1/8ths and counts integers, so the sums
    # are exact in integer eighths, in any order: one pass over the user's hours.
    week8 = day8 = 0
    own_get = own.get
    for h, n in hours.items():
        c = n - own_get(h, 0)
        if c:
            w8, wk8 = _NEAR[(h - how) % 168]
            day8 += w8 * c
            week8 += wk8 * c
    for h, n in own.items():
        if h not in hours:
            w8, wk8 = _NEAR[(h - how) % 168]
            day8 -= w8 * n
            week8 -= wk8 * n
    week, day = week8 / 8, day8 / 8
    # Activity near this hour relative to a flat spread (1 = as busy as an average hour).
    intensity = (84.0 * week + 12.0 * day) / (_KERNEL_SUM * events)
    # A forest splits at random between a feature's extremes: with "rarely" running up to
    # "never" continuously, a night login would sit among late evenings. Hence the gap.
    if intensity <= 0.0:
        return 1.0
    return 0.8 * min(1.0, -math.log10(intensity + 0.001) / 3.0) if intensity < 1.0 else 0.0


def is_checkpoint(n: int) -> bool:
    """Whether the session's ``n``-th request is scored."""
    return n == 1 or n == 4 or n % 16 == 0


def _remember(items: tuple[_T, ...], item: _T, limit: int) -> tuple[_T, ...]:
    # FIFO: a baseline that forgets its oldest entries follows a user who changes job.
    if len(items) >= limit:
        items = items[len(items) - limit + 1 :]
    return (*items, item)


def open_profile(
    base: Baseline, ev: Event, ts: float, network: bytes, min_sessions: int
) -> Profile:
    """Starts a session's profile, comparing its network, browser and hour with the user's."""
    browser = "/".join(classify(ev.user_agent)) if ev.user_agent else ""
    scored = base.sessions >= min_sessions
    profile = Profile(
        scored=scored,
        base_gap=base.log_gap,
        base_bytes=base.log_bytes,
        new_network=bool(network) and network not in base.networks,
        new_browser=bool(browser) and browser not in base.browsers,
        start_rarity=hour_rarity(base.hours, base.events, ts) if scored else 0.0,
        since=ts,
    )
    base.sessions += 1
    if network and profile.new_network:
        base.networks = _remember(base.networks, network, MAX_NETWORKS)
    if browser and profile.new_browser:
        base.browsers = _remember(base.browsers, browser, MAX_BROWSERS)
    return profile


def flush_hours(base: Baseline, profile: Profile) -> None:
    """Adds the requests counted for the current hour to the user's and session's hours
    (also called by the compiled path, native/, when a request starts a new hour)."""
    count = profile.hour_count
    if count:
        how = profile.hour
        base.hours[how] = base.hours.get(how, 0) + count
        profile.own_hours[how] = profile.own_hours.get(how, 0) + count
        base.events += count
        profile.hour_count = 0


def observe(
    base: Baseline, profile: Profile, ev: Event, ts: float, gap: float | None, age_s: float
) -> list[float] | None:
    """Folds one request into the session and the user; returns a feature row at checkpoints.

    ``gap`` is the time since the session's previous request (None for its first),
    ``age_s`` the time since login. The row describes the session *with* this
    request, against the user's baseline *without* it.
    """
    profile.n += 1
    profile.w_requests += 1
    if gap is not None:
        profile.w_gaps += 1
        if gap < BURST_GAP_S:
            profile.w_fast += 1
    url = ev.url
    if url is not None:
        shape = path_shape(url)
        paths = base.paths
        if shape not in paths:
            profile.w_new += 1
            paths[shape] = None
            if len(paths) > MAX_PATHS:
                del paths[next(iter(paths))]  # the oldest: habits change
    size = ev.response_bytes
    if size is not None:
        profile.w_bytes += size
        profile.w_sized += 1
    how = hour_of_week(ts)
    if how == profile.hour:
        profile.hour_count += 1
    else:
        flush_hours(base, profile)
        profile.hour, profile.hour_count = how, 1
    return _checkpoint(base, profile, ts, age_s) if is_checkpoint(profile.n) else None


def _checkpoint(base: Baseline, profile: Profile, ts: float, age_s: float) -> list[float] | None:
    """Closes the window: updates the user's baseline, returns the row if scored."""
    flush_hours(base, profile)
    pace = burst = volume = 0.0
    gaps = profile.w_gaps
    if gaps:
        lg = math.log(max((ts - profile.since) / gaps, 0.5))
        pace = max(0.0, profile.base_gap - lg)
        burst = profile.w_fast / gaps
        base.log_gap += (1.0 - (1.0 - SLOW) ** gaps) * (lg - base.log_gap)
    if profile.w_sized:
        lb = math.log1p(profile.w_bytes / profile.w_sized)
        if profile.base_bytes is not None:
            volume = max(0.0, lb - profile.base_bytes)
        if base.log_bytes is None:
            base.log_bytes = lb
        else:
            base.log_bytes += (1.0 - (1.0 - SLOW) ** profile.w_sized) * (lb - base.log_bytes)
    row = None
    if profile.scored:
        row = [
            pace,
            burst,
            profile.w_new / profile.w_requests,
            hour_rarity(base.hours, base.events, ts, profile.own_hours),
            profile.start_rarity,
            float(profile.new_network),
            float(profile.new_browser),
            volume,
            math.log1p(max(age_s, 0.0) / 60.0),
            math.log1p(profile.n),
        ]
    profile.since = ts
    profile.w_requests = profile.w_gaps = profile.w_fast = 0
    profile.w_new = profile.w_bytes = profile.w_sized = 0
    return row
