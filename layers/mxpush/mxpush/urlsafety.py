"""Which URLs mxpush may call on a user's behalf.

Every URL a user gives us (a backend target) is checked when it is registered and again,
with a fresh DNS lookup, each time we call it:

- http or https only, a host, no user:password part;
- every address the host resolves to must be public, unless the operator allows private
  targets (local mode does by default): then loopback, private and link-local addresses pass;
- cloud metadata addresses are refused always, whatever the setting.

The caller connects to one of the addresses checked here (see `outbound`), so a DNS answer that
changes between check and connect cannot redirect us.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from mxpush.errors import TargetUnreachable, UnsafeTarget

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]

# Instance metadata services: AWS/GCP/Azure/OpenStack, AWS IPv6, ECS task metadata, Alibaba.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200")
)


@dataclass(frozen=True)
class ParsedUrl:
    scheme: str
    host: str
    port: int
    # Path and query, as sent on the request line.
    target: str

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


@dataclass(frozen=True)
class TargetPolicy:
    allow_private: bool = False
    resolver: Resolver | None = None

    def parse(self, url: str) -> ParsedUrl:
        return parse_url(url)

    def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Resolve `host` and return its addresses, or raise `UnsafeTarget`/`TargetUnreachable`."""
        resolver = self.resolver or system_resolver
        literal = _literal_ip(host)
        names = [host] if literal is not None else list(resolver(host, port))
        if not names:
            raise TargetUnreachable(f"{host}: no address found")
        addresses = []
        for name in names:
            address = literal if literal is not None else ipaddress.ip_address(name.split("%")[0])
            self.check_address(host, address)
            addresses.append(address)
        return addresses

    def check_address(self, host: str, address: IPAddress) -> None:
        reached = _addresses_reached(address)
        if any(candidate in METADATA_ADDRESSES for candidate in reached):
            raise UnsafeTarget(f"{host}: cloud metadata addresses are never allowed")
        for candidate in reached:
            self._check_one(host, candidate)

    def _check_one(self, host: str, address: IPAddress) -> None:
        # Before `is_global`: Python counts most multicast ranges as global.
        if address.is_multicast or address.is_unspecified or str(address) == "255.255.255.255":
            raise UnsafeTarget(f"{host}: resolves to {address}, which is not a unicast address")
        if address.is_global:
            return
        if not self.allow_private:
            raise UnsafeTarget(
                f"{host}: resolves to {address}, a private, loopback or link-local address "
                "(allowed only when the operator sets MXPUSH_ALLOW_PRIVATE_TARGETS)"
            )

    def check_url(self, url: str) -> ParsedUrl:
        """Parse and resolve now: for validating a target at registration."""
        parsed = parse_url(url)
        self.resolve(parsed.host, parsed.port)
        return parsed


def parse_url(url: str) -> ParsedUrl:
    if not isinstance(url, str) or not url:
        raise UnsafeTarget("must be a non-empty URL")
    if len(url) > 2048:
        raise UnsafeTarget("URL is longer than 2048 characters")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise UnsafeTarget("URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeTarget(f"not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeTarget("URL scheme must be http or https")
    if parts.username is not None or parts.password is not None:
        raise UnsafeTarget("URL must not contain a user name or password")
    if port == 0:
        raise UnsafeTarget("URL port must be between 1 and 65535")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UnsafeTarget("URL has no host")
    if parts.fragment:
        raise UnsafeTarget("URL must not contain a fragment")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return ParsedUrl(
        scheme=scheme,
        host=host,
        port=port or (443 if scheme == "https" else 80),
        target=target,
    )


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetUnreachable(f"{host}: cannot resolve ({exc})") from None
    seen: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in seen:
            seen.append(address)
    return seen


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _addresses_reached(address: IPAddress) -> list[IPAddress]:
    """The address, and any IPv4 address it leads to (mapped, NAT64, 6to4, Teredo): each must
    pass, or `::ffff:169.254.169.254` would be a way around the rules."""
    if isinstance(address, ipaddress.IPv4Address):
        return [address]
    if address.scope_id is not None:
        # A zone (`fd00:ec2::254%eth0`) does not change which host is reached, but an
        # address with one never compares equal to the same address without it.
        address = ipaddress.IPv6Address(int(address))
    found: list[IPAddress] = [address]
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address in _NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.append(address.teredo[1])
    return found


def _literal_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
