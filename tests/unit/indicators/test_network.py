"""ip_change and user_agent_change, with the tolerance ladder's benign look-alikes."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from detector.netaddr import IpLadder
from tests.helpers import CHROME_ANDROID, CHROME_NEXT, FIREFOX_LINUX, Story, raised, run

VPN = {"detector": {"allow_cidrs": ["100.100.0.0/16"]}}


def test_foreign_ip_is_high_ip_change() -> None:
    s = Story()
    s.login(0)
    e = s.tx(1, ip="185.220.101.4")
    alerts = run(s)
    assert [(a.kind, a.event_id, a.severity) for a in alerts] == [("ip_change", e, "high")]
    assert alerts[0].details["login_ip"] == "10.1.2.3"


@pytest.mark.parametrize("ip", ["10.1.2.200", "10.1.2.3", "10.1.2.1"])
def test_churn_inside_login_prefix_is_benign(ip: str) -> None:
    s = Story()
    s.login(0)
    s.tx(1, ip=ip)
    assert raised(s) == []


def test_prefix_is_configurable() -> None:
    s = Story()
    s.login(0)
    s.tx(1, ip="10.1.9.9")
    assert [k for k, _ in raised(s)] == ["ip_change"]
    assert raised(s, {"detector": {"ip_prefix_v4": 16}}) == []


def test_allow_listed_egress_either_side_is_not_a_change() -> None:
    s = Story()
    s.login(0, ip="100.100.7.7")
    s.tx(1, ip="10.1.2.3")
    s.tx(2, ip="100.100.200.1")
    assert raised(s, VPN) == []


def test_ipv6_prefix_and_family_change() -> None:
    s = Story()
    s.login(0, ip="2001:db8:1:2::10")
    s.tx(1, ip="2001:db8:1:2:ffff::1")
    assert raised(s) == []
    e = s.tx(2, ip="10.1.2.3")
    assert raised(s) == [("ip_change", e)]


def test_browser_upgrade_is_not_a_change() -> None:
    s = Story()
    s.login(0)
    s.tx(1, user_agent=CHROME_NEXT)
    assert raised(s) == []


def test_other_browser_same_network_is_medium() -> None:
    s = Story()
    s.login(0)
    e = s.tx(1, user_agent=FIREFOX_LINUX)
    alerts = run(s)
    assert [(a.kind, a.event_id, a.severity) for a in alerts] == [
        ("user_agent_change", e, "medium")
    ]


def test_other_os_same_browser_is_a_change() -> None:
    s = Story()
    s.login(0)
    s.tx(1, user_agent=CHROME_ANDROID)
    assert [k for k, _ in raised(s)] == ["user_agent_change"]


def test_browser_change_after_ip_change_is_high() -> None:
    s = Story()
    s.login(0)
    s.tx(1, ip="185.220.101.4")
    e = s.tx(2, ip="185.220.101.4", user_agent=FIREFOX_LINUX)
    alerts = run(s)
    assert [(a.kind, a.severity) for a in alerts] == [
        ("ip_change", "high"),
        ("user_agent_change", "high"),
    ]
    assert alerts[1].event_id == e


def test_missing_user_agent_is_not_compared() -> None:
    s = Story()
    s.login(0, user_agent=None)
    s.tx(1, user_agent=FIREFOX_LINUX)
    assert raised(s) == []


def test_guest_session_compares_with_its_first_event() -> None:
    s = Story()
    s.tx(0, user=None, guest=True)
    e = s.tx(1, user=None, guest=True, ip="185.1.1.1")
    assert raised(s) == [("ip_change", e)]


def test_same_asn_as_at_login_is_the_same_network() -> None:
    """A mobile carrier hops prefixes; the autonomous system (Okta's enrichment) stays."""
    s = Story()
    s.login(0, ip="10.1.2.3", asn=3320)
    s.tx(1, ip="172.20.9.9", asn=3320)
    assert raised(s) == []
    assert [k for k, _ in raised(s, {"detector": {"trust_same_asn": False}})] == ["ip_change"]


def test_another_asn_is_still_a_change_with_both_in_evidence() -> None:
    s = Story()
    s.login(0, ip="10.1.2.3", asn=3320)
    s.tx(1, ip="185.220.101.4", asn=208323)
    alerts = run(s)
    assert [a.kind for a in alerts] == ["ip_change"]
    assert (alerts[0].details["login_asn"], alerts[0].details["asn"]) == (3320, 208323)


def test_trust_same_asn_must_be_a_boolean() -> None:
    from detector.policy import PolicyError
    from tests.helpers import policy

    with pytest.raises(PolicyError, match="trust_same_asn"):
        policy({"detector": {"trust_same_asn": "yes"}})


@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**128 - 1),
    st.integers(0, 2**16 - 1),
    st.integers(0, 32),
    st.integers(0, 128),
    st.booleans(),
    st.booleans(),
)
def test_the_ladders_same_place_is_ipaddress_arithmetic(
    v4_base: int, v6_base: int, flip: int, v4: int, v6: int, allow_v4: bool, mixed: bool
) -> None:
    """Same place: the same address, either side allow-listed, or one family and one
    policy prefix; worked out with ``ipaddress`` here, asked twice of one ladder (its
    cache of keys and allow-listing must not change the answer)."""
    allow = [ipaddress.ip_network(f"{ipaddress.IPv4Address(v4_base)}/20", strict=False)]
    if not allow_v4:
        allow = [ipaddress.ip_network(f"{ipaddress.IPv6Address(v6_base)}/100", strict=False)]
    pairs = [
        (ipaddress.IPv4Address(v4_base), ipaddress.IPv4Address(v4_base ^ flip)),
        (ipaddress.IPv6Address(v6_base), ipaddress.IPv6Address(v6_base ^ (flip << 20))),
        (ipaddress.IPv4Address(v4_base ^ (flip << 16)), ipaddress.IPv4Address(v4_base)),
    ]
    if mixed:
        pairs.append((ipaddress.IPv4Address(v4_base), ipaddress.IPv6Address(v6_base)))
    ladder = IpLadder(v4, v6, allow)
    for a, b in pairs + pairs:
        expected = (
            a == b
            or any(a in net or b in net for net in allow)
            or (
                a.version == b.version
                and ipaddress.ip_network(f"{a}/{v4 if a.version == 4 else v6}", strict=False)
                == ipaddress.ip_network(f"{b}/{v4 if b.version == 4 else v6}", strict=False)
            )
        )
        assert ladder.same_place(str(a), str(b)) is expected, (a, b)
        assert ladder.same_place(str(b), str(a)) is expected, (b, a)
