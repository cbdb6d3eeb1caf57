"""impossible_travel: one user in two places faster than 900 km/h, from event locations."""

from __future__ import annotations

from typing import Any

from tests.helpers import SID2, Story, raised, replay, run

BERLIN: dict[str, Any] = {"geo_lat": 52.52, "geo_lon": 13.405}
PARIS: dict[str, Any] = {"geo_lat": 48.8566, "geo_lon": 2.3522}  # 877 km from Berlin
SYDNEY: dict[str, Any] = {"geo_lat": -33.8688, "geo_lon": 151.2093}
POTSDAM: dict[str, Any] = {"geo_lat": 52.3906, "geo_lon": 13.0645}  # 27 km: GeoIP noise range


def test_a_continent_away_in_minutes_is_impossible() -> None:
    s = Story()
    s.login(0, **BERLIN)
    e = s.tx(30, ip="10.1.2.4", **SYDNEY)
    alerts = run(s)
    assert [(a.kind, a.event_id, a.severity) for a in alerts] == [("impossible_travel", e, "high")]
    assert alerts[0].details["distance_km"] > 16000 and alerts[0].details["speed_kmh"] > 900


def test_across_sessions_of_one_user() -> None:
    s = Story()
    s.login(0, **BERLIN)
    s.login(20, sid=SID2, ip="10.1.2.3", **SYDNEY)
    assert ("impossible_travel", "e2") in raised(s)


def test_a_plausible_flight_is_not() -> None:
    s = Story()
    s.login(0, **BERLIN)
    s.login(120, sid=SID2, **PARIS)  # 877 km in two hours: 440 km/h
    assert raised(s) == []


def test_nearby_points_and_missing_locations_are_ignored() -> None:
    s = Story()
    s.login(0, **BERLIN)
    s.tx(1, **POTSDAM)  # 27 km in a minute: geolocation noise, not travel
    s.tx(2)  # no location at all
    assert raised(s) == []


def test_it_can_be_disabled() -> None:
    s = Story()
    s.login(0, **BERLIN)
    s.tx(30, **SYDNEY)
    assert raised(s, {"rules": {"impossible_travel": {"enabled": False}}}) == []


def test_half_a_location_is_refused() -> None:
    s = Story()
    s.login(0, geo_lat=52.5)
    _, dead, _ = replay(s.lines())
    assert [d.reason.split(":")[0] for d in dead] == ["wrong_type"]
