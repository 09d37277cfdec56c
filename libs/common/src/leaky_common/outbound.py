"""The outbound URL guard: the one check every user-configured destination passes (at configuration time and
again at send time), so that nobody can make a service call its own network (SSRF).

A destination is refused unless it is an absolute http(s) URL without userinfo whose host resolves only to
public addresses. Refused ranges (by category): loopback, private (RFC 1918, ULA, and other special-purpose
ranges), link-local (169.254/16, fe80::/10), multicast, unspecified, CGNAT (100.64/10), cloud metadata
addresses, reserved/documentation ranges. IPv4 embedded in IPv6 (IPv4-mapped, NAT64, 6to4, IPv4-compatible)
is judged by its IPv4 address. Numeric host forms the resolver accepts (decimal `2130706433`, octal
`0177.0.0.1`, hex `0x7f.1`) are judged by what they resolve to. An operator allow-list lets chosen networks
through (`10.1.0.0/16`), or one address and port only (`127.0.0.1:8090`, `[::1]:8090`): local fakes in
development and tests are allowed that way without opening the services that listen on the same address.

`check_address` is pure; `resolve_checked` resolves a host and checks every address it resolves to (one bad
answer refuses the host, so a DNS answer mixing a public and a private address cannot slip through).
Callers connect to the addresses `resolve_checked` returned, never resolve again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = [
    "Destination",
    "DestinationRefused",
    "OutboundPolicy",
    "check_address",
    "parse_destination",
    "resolve_checked",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
# Cloud metadata services that are not already link-local: AWS IPv6 (ULA), Alibaba (in CGNAT), Oracle.
_METADATA = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.169.254/32",
        "169.254.170.2/32",
        "fd00:ec2::254/128",
        "100.100.100.200/32",
        "192.0.0.192/32",
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class DestinationRefused(ValueError):
    """A destination the guard refuses; `category` is short and safe to show (never a resolved address)."""

    def __init__(self, category: str, message: str) -> None:
        super().__init__(message)
        self.category = category


@dataclass(frozen=True, slots=True)
class Destination:
    """The parts of a checked URL a connection needs."""

    scheme: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class OutboundPolicy:
    """Which non-public destinations an operator lets outbound requests reach (none by default): networks
    (any port) and single address-and-port pairs."""

    allow: tuple[IPNetwork, ...] = ()
    allow_ports: tuple[tuple[IPAddress, int], ...] = ()

    @classmethod
    def from_strings(cls, entries: list[str]) -> OutboundPolicy:
        """From "10.1.0.0/16", "::1/128", "127.0.0.1" (one address, any port), "127.0.0.1:8090" or
        "[::1]:8090" (one address, one port); ValueError on anything else."""
        networks: list[IPNetwork] = []
        ports: list[tuple[IPAddress, int]] = []
        for raw in (e.strip() for e in entries):
            if not raw:
                continue
            host, sep, port = (
                raw.rpartition(":") if raw.startswith("[") or raw.count(":") == 1 else ("", "", "")
            )
            if sep:
                number = int(port)
                if not 0 < number < 65536:
                    raise ValueError(f"bad port in {raw!r}")
                ports.append((ipaddress.ip_address(host.strip("[]")), number))
            else:
                networks.append(ipaddress.ip_network(raw, strict=False))
        return cls(tuple(networks), tuple(ports))

    def allows(self, address: IPAddress, port: int | None = None) -> bool:
        """Whether the allow-list names this address (and port)."""
        if any(address.version == net.version and address in net for net in self.allow):
            return True
        return port is not None and (address, port) in self.allow_ports


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _category(address: IPAddress) -> str | None:  # noqa: PLR0911 - one answer per refused range
    if any(address in net for net in _METADATA if net.version == address.version):
        return "metadata"
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.version == 4 and address in _CGNAT:
        return "cgnat"
    if address.is_private:
        return "private"
    if address.is_reserved or not address.is_global:
        return "reserved"
    return None


def check_address(address: IPAddress, policy: OutboundPolicy, port: int | None = None) -> None:
    """Raise DestinationRefused unless `address` (at `port`) is public or allowed by `policy`."""
    if policy.allows(address, port):
        return
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            check_address(embedded, policy, port)
            return
    category = _category(address)
    if category is not None:
        raise DestinationRefused(category, f"destination refused: {category} address")


def parse_destination(url: str) -> Destination:
    """Syntax only: an absolute http(s) URL with a host, no userinfo, a valid port; raise DestinationRefused."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise DestinationRefused("invalid", "url is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DestinationRefused("invalid", "url must be an absolute http or https URL")
    if "@" in parts.netloc:
        raise DestinationRefused("invalid", "url must not contain a user name or password")
    if any(c in parts.netloc for c in "\\ \t\r\n%"):
        raise DestinationRefused("invalid", "url host contains characters that are not allowed")
    host = parts.hostname.rstrip(".")
    if not host:
        raise DestinationRefused("invalid", "url must be an absolute http or https URL")
    default = 443 if parts.scheme == "https" else 80
    return Destination(parts.scheme, host, port if port is not None else default)


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


async def resolve_checked(host: str, port: int, policy: OutboundPolicy) -> list[IPAddress]:
    """Resolve `host` and check every address; the addresses to connect to, or DestinationRefused."""
    literal = _literal(host)
    if literal is not None:
        check_address(literal, policy, port)
        return [literal]
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        addresses: list[IPAddress] = [ipaddress.ip_address("127.0.0.1")]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
        except (OSError, UnicodeError):
            raise DestinationRefused("unresolvable", "destination host does not resolve") from None
        addresses = []
        for *_, sockaddr in infos:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if address not in addresses:
                addresses.append(address)
    if not addresses:
        raise DestinationRefused("unresolvable", "destination host does not resolve")
    for address in addresses:
        check_address(address, policy, port)
    return addresses
