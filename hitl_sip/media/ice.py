"""Which addresses a WebRTC peer may advertise, and which ICE servers it uses.

aioice gathers a host candidate on every interface address except ``127.0.0.1``. On a media
server that is wrong both ways: a container's bridge (``docker0``, ``br-*``, ``veth*``...)
leaks addresses the browser can never reach, and a deployment (or a loopback test) may want
exactly one address. :func:`install_host_filter` replaces aioice's enumeration with one that
honours ``webrtc.host_addresses`` (IPs or CIDRs; loopback allowed when listed) and otherwise
skips loopback, link-local and container interfaces. :func:`advertise_public` rewrites host
candidates in an SDP to a 1:1 NAT's public address (``webrtc.public_address``).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Sequence
from typing import Any

import aioice.ice
import ifaddr
from aiortc import RTCConfiguration, RTCIceServer

log = logging.getLogger(__name__)

CONTAINER_INTERFACES = ("docker", "br-", "veth", "virbr", "cni", "flannel", "cali", "vxlan",
                        "podman", "lxc", "kube", "weave", "cilium")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _adapters() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                out.append((adapter.nice_name, ip.ip))
            elif ip.ip[2] == 0:  # IPv6 with scope id: link-local, never a candidate
                out.append((adapter.nice_name, ip.ip[0]))
    return out


def host_addresses(
    allowed: Sequence[str],
    use_ipv4: bool = True,
    use_ipv6: bool = True,
    adapters: Callable[[], list[tuple[str, str]]] = _adapters,
) -> list[str]:
    """The addresses to gather host candidates on (see the module docstring)."""
    networks: list[Network] = [ipaddress.ip_network(a, strict=False) for a in allowed]
    chosen: list[str] = []
    for name, text in adapters():
        ip = ipaddress.ip_address(text)
        if (ip.version == 4 and not use_ipv4) or (ip.version == 6 and not use_ipv6):
            continue
        if networks:
            if any(ip in net for net in networks if net.version == ip.version):
                chosen.append(text)
            continue
        if ip.is_loopback or ip.is_link_local or name.startswith(CONTAINER_INTERFACES):
            continue
        chosen.append(text)
    return chosen


def install_host_filter(allowed: Sequence[str]) -> None:
    """Make every aiortc peer of this process gather on :func:`host_addresses` only."""

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        chosen = host_addresses(allowed, use_ipv4, use_ipv6)
        if not chosen:
            log.warning("no interface address matches webrtc.host_addresses %s: the agent "
                        "peer has no host candidate", list(allowed) or "(default)")
        return chosen

    aioice.ice.get_host_addresses = get_host_addresses  # type: ignore[assignment]


def advertise_public(sdp: str, public_address: str) -> str:
    """Replace the connection address of host candidates (and c= lines) by a public one."""
    if not public_address:
        return sdp
    lines = []
    for line in sdp.split("\r\n"):
        out = line
        if line.startswith("a=candidate:") and " typ host" in line:
            parts = line.split(" ")
            if len(parts) > 5:
                parts[4] = public_address
                out = " ".join(parts)
        elif line.startswith("c=IN IP"):
            family = "IP6" if ":" in public_address else "IP4"
            out = f"c=IN {family} {public_address}"
        lines.append(out)
    return "\r\n".join(lines)


def rtc_configuration(stun: Sequence[str], turn: Sequence[str], username: str,
                      password: str) -> RTCConfiguration:
    servers: list[Any] = [RTCIceServer(urls=url) for url in stun[:1]]
    servers += [RTCIceServer(urls=url, username=username, credential=password)
                for url in turn[:1]]
    return RTCConfiguration(iceServers=servers)
