"""Impossible travel: one user active in two places too far apart for the time between.

A stolen session (or password) used from another continent shows up as a user who
moved faster than an airliner. Locations come with the events (``geo_lat``/``geo_lon``:
the platform's enrichment, e.g. Okta's geolocation, or a GeoIP lookup upstream); with
none, the indicator is silent. Nearby points are not compared, since geolocation of
an address is only city-accurate.
"""

from __future__ import annotations

import math

from detector.events import ACTIVITY_TYPES
from detector.indicators.base import Context, Evidence, Indicator

#: SPEC.md: more than 900 km/h is impossible travel.
MAX_KMH = 900.0
#: Geolocation of an IP address is city-level at best: closer points never alert.
MIN_KM = 100.0
EARTH_KM = 6371.0


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine).

    >>> round(distance_km(52.52, 13.405, 48.8566, 2.3522))  # Berlin - Paris
    877
    """
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_KM * math.asin(min(1.0, math.sqrt(a)))


def impossible_travel(ctx: Context) -> Evidence | None:
    ev, u = ctx.event, ctx.user
    if ev.geo_lat is None or ev.geo_lon is None or u is None or u.geo is None:
        return None
    lat0, lon0, t0 = u.geo
    km = distance_km(lat0, lon0, ev.geo_lat, ev.geo_lon)
    if km < MIN_KM:
        return None
    hours = (abs(ctx.ts - t0) + ctx.policy.clock_skew_s) / 3600.0  # skew favours the user
    speed = km / hours
    if speed <= MAX_KMH:
        return None
    return {
        "distance_km": round(km, 1),
        "seconds": round(abs(ctx.ts - t0), 3),
        "speed_kmh": round(speed),
        "previous_location": [lat0, lon0],
        "location": [ev.geo_lat, ev.geo_lon],
    }


INDICATORS = (Indicator("impossible_travel", ACTIVITY_TYPES, impossible_travel, gate="located"),)
