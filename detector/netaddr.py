"""IP parsing on the hot path, and the tolerance ladder behind ``ip_change``.

Users move inside their network all day (DHCP, office Wi-Fi, carrier NAT pools),
so an address counts as "the same place" when it shares the login address's
prefix (/24 for IPv4, /64 for IPv6 by default) or when either side is in an
allow-listed egress range (VPN concentrators, proxies). A change of address
family is always outside the prefix.

Parsing goes through ``socket.inet_pton`` (strict, in C, ~15x faster than the
``ipaddress`` module): a busy stream has too many distinct addresses to cache.

>>> ladder = IpLadder(24, 64, ())
>>> ladder.same_place("10.1.2.3", "10.1.2.200"), ladder.same_place("10.1.2.3", "10.1.3.1")
(True, False)
>>> ladder.same_place("10.1.2.3", "::ffff:10.1.2.3")
False
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6
_pton = socket.inet_pton
_KEY_CACHE_MAX = 262_144


def packed(ip: str) -> bytes | None:
    """The address's network-order bytes (4 or 16), or None if it is not an address."""
    try:
        return _pton(_AF_INET6 if ":" in ip else _AF_INET, ip)
    except (OSError, ValueError):
        return None


def valid_ip(ip: str) -> bool:
    return packed(ip) is not None


class IpLadder:
    """Decides whether two addresses are the same place for one policy."""

    def __init__(self, prefix_v4: int, prefix_v6: int, allow: Iterable[Network]) -> None:
        self._prefix = {4: prefix_v4, 16: prefix_v6}
        # Per address length: (whole bytes, remaining bits) of the prefix, and the key's
        # first byte (the length, so the families never compare equal).
        self._cut = {n: divmod(bits, 8) for n, bits in self._prefix.items()}
        self._head = {n: bytes((n,)) for n in self._prefix}
        # Addresses repeat (a login IP is compared on every event of its session), but
        # too many exist for an LRU's bookkeeping to pay; a dict emptied when full does.
        self._keys: dict[str, bytes] = {}
        # (address length, mask, network) as integers, so membership needs no ipaddress parse.
        self._allow = tuple(
            (net.max_prefixlen // 8, int(net.netmask), int(net.network_address)) for net in allow
        )

    @property
    def allow_ranges(self) -> tuple[tuple[int, int, int], ...]:
        """The allow-list as (address length in bytes, mask, network), integers."""
        return self._allow

    def network_key(self, ip: str) -> bytes:
        """Bytes equal for two addresses exactly when they share the policy prefix."""
        key = self._keys.get(ip)
        if key is None:
            if len(self._keys) >= _KEY_CACHE_MAX:
                self._keys.clear()
            key = self._keys[ip] = self._network_key(ip)
        return key

    def _network_key(self, ip: str) -> bytes:
        try:
            raw = _pton(_AF_INET6 if ":" in ip else _AF_INET, ip)
        except (OSError, ValueError):
            return b""
        size = len(raw)
        whole, rest = self._cut[size]
        key = self._head[size] + raw[:whole]
        if rest:
            key += bytes((raw[whole] >> (8 - rest),))
        return key

    def place_key(self, ip: str) -> bytes:
        """Like :meth:`network_key`, but every allow-listed address is one place (a VPN)."""
        return b"allowed" if self.allowed(ip) else self.network_key(ip)

    def allowed(self, ip: str) -> bool:
        if not self._allow:
            return False
        raw = packed(ip)
        if raw is None:
            return False
        value = int.from_bytes(raw)
        size = len(raw)
        return any(size == n and value & mask == net for n, mask, net in self._allow)

    def same_place(self, login_ip: str, ip: str) -> bool:
        if ip == login_ip:
            return True
        keys = self._keys
        key = keys.get(ip) or self.network_key(ip)
        if key == (keys.get(login_ip) or self.network_key(login_ip)):
            return True
        return self.allowed(ip) or self.allowed(login_ip)
