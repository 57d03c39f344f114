"""Source-IP allow-list for SIP requests, and parsing of pjsua's ``ip:port`` source strings.

An empty allow-list allows nothing; only an explicit ``allow_any=True`` admits every source.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_cidr(entry: str) -> Network:
    """One allow-list entry: ``"54.172.60.0/30"``, ``"::1"`` (a single host) or ``"10.0.0.0/8"``.

    Host bits set (``"10.0.0.1/8"``) are an error: such a typo must not widen or narrow the list.
    """
    text = entry.strip()
    if not text:
        raise ValueError("empty CIDR entry")
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        raise ValueError(f"invalid CIDR {text[:60]!r}: {e}") from e


def parse_ip(ip: str) -> Address:
    """An IPv4/IPv6 address; an IPv4-mapped IPv6 address (``::ffff:1.2.3.4``) becomes IPv4."""
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError as e:
        raise ValueError(f"invalid IP address {ip[:60]!r}") from e
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class AllowList:
    """Networks a request may come from; ``allow_any`` admits everything, empty admits nothing."""

    networks: tuple[Network, ...] = ()
    allow_any: bool = False

    @classmethod
    def from_cidrs(cls, cidrs: Iterable[str], *, allow_any: bool = False) -> AllowList:
        """Build from CIDR strings; a bad entry raises ValueError naming it and its index."""
        networks: list[Network] = []
        for index, entry in enumerate(cidrs):
            try:
                networks.append(parse_cidr(entry))
            except ValueError as e:
                raise ValueError(f"entry {index}: {e}") from e
        return cls(tuple(networks), allow_any)

    def allows(self, ip: str) -> bool:
        """Whether ``ip`` is admitted; an unparseable address raises ValueError."""
        address = parse_ip(ip)
        if self.allow_any:
            return True
        return any(
            address.version == network.version and address in network for network in self.networks
        )


def parse_source(src: str) -> tuple[str, int]:
    """Split pjsua's ``rdata.srcAddress`` (``"1.2.3.4:5060"``, ``"[::1]:5060"``) into (ip, port)."""
    text = src.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"bad source address {text[:60]!r}: missing ']'")
        host, rest = text[1:end], text[end + 1 :]
        if not rest.startswith(":"):
            raise ValueError(f"bad source address {text[:60]!r}: expected ':port' after ']'")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"bad source address {text[:60]!r}: expected 'ip:port'")
        if ":" in host:
            raise ValueError(f"bad source address {text[:60]!r}: IPv6 needs '[addr]:port'")
    if not port_text.isdigit() or not port_text.isascii() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad source port {port_text[:10]!r}: expected 1–65535")
    try:
        address = ipaddress.ip_address(host)
    except ValueError as e:
        raise ValueError(f"bad source address {host[:60]!r}: not an IP address") from e
    return str(address), int(port_text)
