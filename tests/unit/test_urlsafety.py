"""`urlsafety`: which URLs mxpush may call. No real DNS: resolvers are injected (or
`getaddrinfo` patched, for the system resolver)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

import pytest

from mxpush.errors import TargetUnreachable, UnsafeTarget
from mxpush.urlsafety import ParsedUrl, TargetPolicy, parse_url

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"


class FakeResolver:
    """Answers from a fixed table and records every lookup."""

    def __init__(self, table: dict[str, Sequence[str]]) -> None:
        self.table = table
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append((host, port))
        return self.table[host]


def refuse_all(host: str, port: int) -> Sequence[str]:
    raise AssertionError(f"the resolver must not be called (asked for {host}:{port})")


# --- parse_url ----------------------------------------------------------------------------------


def test_parse_https_url() -> None:
    parsed = parse_url("HTTPS://Gotify.Example.ORG./prefix/message?a=1&b=2")

    assert parsed == ParsedUrl(
        scheme="https", host="gotify.example.org", port=443, target="/prefix/message?a=1&b=2"
    )


def test_parse_http_url_with_port_and_no_path() -> None:
    assert parse_url("http://example.org:8080") == ParsedUrl("http", "example.org", 8080, "/")


def test_parse_ipv6_literal() -> None:
    parsed = parse_url("http://[2001:db8::1]:8080/x")

    assert (parsed.host, parsed.port, parsed.target) == ("2001:db8::1", 8080, "/x")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.org/", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("gopher://example.org/", "scheme"),
        ("javascript:alert(1)", "scheme"),
        ("example.org/message", "scheme"),
        ("//example.org/message", "scheme"),
        ("http://user:secret@example.org/", "user name or password"),
        ("http://user@example.org/", "user name or password"),
        ("https://:secret@example.org/", "user name or password"),
        ("http:///message", "no host"),
        ("http://:80/message", "no host"),
        ("https://example.org/#fragment", "fragment"),
        ("https://example.org/a b", "whitespace"),
        ("https://example.org/\tb", "whitespace"),
        ("https://example.org/\nb", "whitespace"),
        ("https://example.org/\x00", "control"),
        ("https://example.org/\x1b[31m", "control"),
        (" https://example.org/", "whitespace"),
        ("https://example.org/" + "a" * 2029, "2048"),
        ("https://example.org:99999/", "not a valid URL"),
        ("https://example.org:port/", "not a valid URL"),
        ("", "non-empty"),
    ],
)
def test_parse_url_refuses(url: str, message: str) -> None:
    with pytest.raises(UnsafeTarget, match=message):
        parse_url(url)


def test_url_of_2048_characters_is_accepted() -> None:
    url = "https://example.org/" + "a" * 2028
    assert len(url) == 2048

    assert parse_url(url).host == "example.org"


@pytest.mark.parametrize(
    ("url", "header"),
    [
        ("https://example.org/", "example.org"),
        ("https://example.org:443/", "example.org"),
        ("http://example.org:80/", "example.org"),
        ("http://example.org/", "example.org"),
        ("https://example.org:8443/", "example.org:8443"),
        ("http://example.org:443/", "example.org:443"),
        ("https://example.org:80/", "example.org:80"),
        ("http://[2001:db8::1]/", "[2001:db8::1]"),
        ("http://[2001:db8::1]:8080/", "[2001:db8::1]:8080"),
        ("https://[::1]:443/", "[::1]"),
    ],
)
def test_host_header(url: str, header: str) -> None:
    assert parse_url(url).host_header == header


# --- resolve: what is allowed -------------------------------------------------------------------


@pytest.mark.parametrize("address", [PUBLIC_V4, PUBLIC_V6, "8.8.8.8"])
def test_public_address_is_allowed(address: str) -> None:
    resolver = FakeResolver({"push.example.org": [address]})

    addresses = TargetPolicy(resolver=resolver).resolve("push.example.org", 443)

    assert addresses == [ipaddress.ip_address(address)]
    assert resolver.calls == [("push.example.org", 443)]


def test_all_addresses_are_returned_in_order() -> None:
    resolver = FakeResolver({"push.example.org": [PUBLIC_V6, PUBLIC_V4]})

    addresses = TargetPolicy(resolver=resolver).resolve("push.example.org", 443)

    assert addresses == [ipaddress.ip_address(PUBLIC_V6), ipaddress.ip_address(PUBLIC_V4)]


PRIVATE_ADDRESSES = [
    "10.0.0.1",
    "10.255.255.254",
    "192.168.1.10",
    "172.16.0.1",
    "172.31.255.254",
    "127.0.0.1",
    "127.8.9.10",
    "::1",
    "169.254.10.20",
    "fe80::1",
    "100.64.0.1",
    "100.127.255.254",
    "fc00::1",
    "fd12:3456::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
]


@pytest.mark.parametrize("address", PRIVATE_ADDRESSES)
def test_private_address_is_refused_by_default(address: str) -> None:
    resolver = FakeResolver({"inside.example.org": [address]})

    with pytest.raises(UnsafeTarget, match="MXPUSH_ALLOW_PRIVATE_TARGETS"):
        TargetPolicy(resolver=resolver).resolve("inside.example.org", 80)


@pytest.mark.parametrize("address", PRIVATE_ADDRESSES)
def test_private_address_is_allowed_when_the_operator_allows_it(address: str) -> None:
    resolver = FakeResolver({"inside.example.org": [address]})

    addresses = TargetPolicy(allow_private=True, resolver=resolver).resolve(
        "inside.example.org", 80
    )

    assert addresses == [ipaddress.ip_address(address)]


@pytest.mark.parametrize(
    "address", ["172.15.255.255", "172.32.0.1", "100.63.255.255", "100.128.0.1"]
)
def test_neighbours_of_private_ranges_are_public(address: str) -> None:
    resolver = FakeResolver({"edge.example.org": [address]})

    assert TargetPolicy(resolver=resolver).resolve("edge.example.org", 80) == [
        ipaddress.ip_address(address)
    ]


@pytest.mark.parametrize("allow_private", [False, True])
@pytest.mark.parametrize(
    "address",
    ["0.0.0.0", "::", "224.0.0.1", "239.1.2.3", "ff02::1", "ff0e::1", "255.255.255.255"],  # noqa: S104
)
def test_unspecified_multicast_and_broadcast_are_refused_always(
    address: str, allow_private: bool
) -> None:
    resolver = FakeResolver({"odd.example.org": [address]})

    with pytest.raises(UnsafeTarget, match="resolves to"):
        TargetPolicy(allow_private=allow_private, resolver=resolver).resolve("odd.example.org", 80)


METADATA = [
    "169.254.169.254",
    "fd00:ec2::254",
    "169.254.170.2",
    "100.100.100.200",
    "::ffff:169.254.169.254",
]


@pytest.mark.parametrize("allow_private", [False, True])
@pytest.mark.parametrize("address", METADATA)
def test_metadata_addresses_are_refused_always(address: str, allow_private: bool) -> None:
    resolver = FakeResolver({"metadata.example.org": [address]})
    policy = TargetPolicy(allow_private=allow_private, resolver=resolver)

    with pytest.raises(UnsafeTarget, match="metadata"):
        policy.resolve("metadata.example.org", 80)


@pytest.mark.parametrize("allow_private", [False, True])
@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://169.254.170.2/v2/credentials",
        "http://100.100.100.200/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://[::ffff:a9fe:a9fe]/",
        # An IPv6 zone does not change which host is reached.
        "http://[fd00:ec2::254%25eth0]/",
    ],
)
def test_metadata_literals_are_refused_always(url: str, allow_private: bool) -> None:
    with pytest.raises(UnsafeTarget, match="metadata"):
        TargetPolicy(allow_private=allow_private, resolver=refuse_all).check_url(url)


def test_metadata_from_the_resolver_with_a_zone_is_refused() -> None:
    resolver = FakeResolver({"metadata.example.org": ["fd00:ec2::254%eth0"]})

    with pytest.raises(UnsafeTarget, match="metadata"):
        TargetPolicy(allow_private=True, resolver=resolver).resolve("metadata.example.org", 80)


@pytest.mark.parametrize("order", [[PUBLIC_V4, "10.0.0.5"], ["10.0.0.5", PUBLIC_V4]])
def test_one_private_address_among_public_ones_is_refused(order: list[str]) -> None:
    resolver = FakeResolver({"rebind.example.org": order})

    with pytest.raises(UnsafeTarget, match=r"10\.0\.0\.5"):
        TargetPolicy(resolver=resolver).resolve("rebind.example.org", 443)


def test_one_metadata_address_among_public_ones_is_refused_even_if_private_is_allowed() -> None:
    resolver = FakeResolver({"rebind.example.org": [PUBLIC_V4, "169.254.169.254"]})

    with pytest.raises(UnsafeTarget, match="metadata"):
        TargetPolicy(allow_private=True, resolver=resolver).resolve("rebind.example.org", 443)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://93.184.216.34/message", True),
        (f"https://[{PUBLIC_V6}]/message", True),
        ("http://127.0.0.1:8080/message", False),
        ("http://10.1.2.3/message", False),
        ("http://[::1]:8080/message", False),
        ("http://[::ffff:127.0.0.1]/message", False),
        ("http://[fe80::1%25eth0]/message", False),
    ],
)
def test_literal_ips_are_checked_without_the_resolver(url: str, allowed: bool) -> None:
    calls: list[str] = []

    def resolver(host: str, port: int) -> Sequence[str]:
        calls.append(host)
        return [PUBLIC_V4]

    policy = TargetPolicy(resolver=resolver)
    if allowed:
        policy.check_url(url)
    else:
        with pytest.raises(UnsafeTarget):
            policy.check_url(url)
    assert calls == []


def test_check_url_resolves_the_url_host_and_port() -> None:
    resolver = FakeResolver({"push.example.org": [PUBLIC_V4]})

    parsed = TargetPolicy(resolver=resolver).check_url("https://push.example.org:8443/message")

    assert parsed.target == "/message"
    assert resolver.calls == [("push.example.org", 8443)]


def test_check_url_refuses_a_name_resolving_to_loopback() -> None:
    resolver = FakeResolver({"localhost.example.org": ["127.0.0.1"]})

    with pytest.raises(UnsafeTarget):
        TargetPolicy(resolver=resolver).check_url("http://localhost.example.org/")


# --- resolver failures --------------------------------------------------------------------------


def test_resolver_failure_propagates_as_target_unreachable() -> None:
    def failing(host: str, port: int) -> Sequence[str]:
        raise TargetUnreachable(f"{host}: cannot resolve")

    with pytest.raises(TargetUnreachable, match=r"nowhere\.example\.org"):
        TargetPolicy(resolver=failing).resolve("nowhere.example.org", 443)


def test_no_address_is_target_unreachable() -> None:
    resolver = FakeResolver({"empty.example.org": []})

    with pytest.raises(TargetUnreachable, match="no address"):
        TargetPolicy(resolver=resolver).resolve("empty.example.org", 443)


@pytest.mark.parametrize(
    "error", [socket.gaierror(-2, "Name or service not known"), UnicodeError("label too long")]
)
def test_system_resolver_turns_lookup_errors_into_target_unreachable(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def fail(*args: object, **kwargs: object) -> list[tuple[object, ...]]:
        raise error

    monkeypatch.setattr(socket, "getaddrinfo", fail)

    with pytest.raises(TargetUnreachable, match="cannot resolve"):
        TargetPolicy().resolve("nowhere.example.org", 443)


def test_system_resolver_deduplicates_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[object, ...]] = []

    def getaddrinfo(*args: object, **kwargs: object) -> list[tuple[object, ...]]:
        asked.append(args)
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC_V4, 443)),
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (PUBLIC_V6, 443, 0, 0)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC_V4, 443)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    addresses = TargetPolicy().resolve("push.example.org", 443)

    assert addresses == [ipaddress.ip_address(PUBLIC_V4), ipaddress.ip_address(PUBLIC_V6)]
    assert asked == [("push.example.org", 443)]


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("64:ff9b::a9fe:a9fe", "metadata"),  # NAT64 form of 169.254.169.254
        ("2002:a9fe:a9fe::1", "metadata"),  # 6to4 form of 169.254.169.254
        ("64:ff9b::a00:1", "private"),  # NAT64 form of 10.0.0.1
        ("2002:7f00:1::1", "private"),  # 6to4 form of 127.0.0.1
    ],
)
def test_ipv4_embedded_in_ipv6_is_checked_too(address: str, message: str) -> None:
    resolver = FakeResolver({"sneaky.example.org": [address]})
    with pytest.raises(UnsafeTarget, match=message):
        TargetPolicy(resolver=resolver).resolve("sneaky.example.org", 80)


@pytest.mark.parametrize("url", ["http://example.org/a\x7fb", "http://example.org:0/"])
def test_del_character_and_port_zero_are_refused(url: str) -> None:
    with pytest.raises(UnsafeTarget):
        parse_url(url)
