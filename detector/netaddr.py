"""The IP tolerance ladder behind ``ip_change``.

Users move inside their network all day (DHCP, office Wi-Fi, carrier NAT pools),
so an address counts as "the same place" when it shares the login address's
prefix (/24 for IPv4, /64 for IPv6 by default) or when either side is in an
allow-listed egress range (VPN concentrators, proxies). A change of address
family is always outside the prefix.

>>> ladder = IpLadder(24, 64, ())
>>> ladder.same_place("10.1.2.3", "10.1.2.200"), ladder.same_place("10.1.2.3", "10.1.3.1")
(True, False)
>>> ladder.same_place("10.1.2.3", "::ffff:10.1.2.3")
False
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class IpLadder:
    """Decides whether two addresses are the same place for one policy."""

    def __init__(self, prefix_v4: int, prefix_v6: int, allow: Iterable[Network]) -> None:
        self._shift4 = 32 - prefix_v4
        self._shift6 = 128 - prefix_v6
        self._allow = tuple(allow)
        # Per-instance caches: the network key of an address depends on this policy.
        self.network_key = lru_cache(maxsize=65536)(self._network_key)
        self.allowed = lru_cache(maxsize=65536)(self._allowed)

    def _network_key(self, ip: str) -> tuple[int, int]:
        addr = ipaddress.ip_address(ip)
        if addr.version == 4:
            return 4, int(addr) >> self._shift4
        return 6, int(addr) >> self._shift6

    def _allowed(self, ip: str) -> bool:
        if not self._allow:
            return False
        addr = ipaddress.ip_address(ip)
        return any(addr in net for net in self._allow)

    def same_place(self, login_ip: str, ip: str) -> bool:
        if ip == login_ip:
            return True
        if self.network_key(ip) == self.network_key(login_ip):
            return True
        return self.allowed(ip) or self.allowed(login_ip)
