"""AllowList and parse_source: who may send us SIP, and pjsua's source address format."""

from __future__ import annotations

import pytest

from hitl_sip.sip.acl import AllowList, parse_cidr, parse_source

TWILIO_LIKE = ["54.172.60.0/30", "54.244.51.0/30", "2001:db8:10::/48"]


def test_allows_addresses_inside_the_listed_networks() -> None:
    acl = AllowList.from_cidrs(TWILIO_LIKE)

    assert acl.allows("54.172.60.0")
    assert acl.allows("54.172.60.3")
    assert acl.allows("54.244.51.2")
    assert acl.allows("2001:db8:10::5")


def test_refuses_addresses_outside_the_listed_networks() -> None:
    acl = AllowList.from_cidrs(TWILIO_LIKE)

    assert not acl.allows("54.172.60.4")
    assert not acl.allows("10.0.0.1")
    assert not acl.allows("2001:db8:11::5")
    assert not acl.allows("::1")


def test_empty_list_allows_nothing() -> None:
    acl = AllowList.from_cidrs([])

    assert not acl.allows("127.0.0.1")
    assert not acl.allows("::1")
    assert not AllowList().allows("8.8.8.8")


def test_allow_any_admits_every_address() -> None:
    acl = AllowList.from_cidrs([], allow_any=True)

    assert acl.allows("203.0.113.9")
    assert acl.allows("2001:db8::1")


def test_single_host_entries() -> None:
    acl = AllowList.from_cidrs(["127.0.0.1", "::1"])

    assert acl.allows("127.0.0.1")
    assert acl.allows("::1")
    assert not acl.allows("127.0.0.2")


def test_ipv4_mapped_ipv6_source_matches_ipv4_networks() -> None:
    acl = AllowList.from_cidrs(["54.172.60.0/30"])

    assert acl.allows("::ffff:54.172.60.1")
    assert not acl.allows("::ffff:54.172.60.9")


def test_ipv6_with_scope_id() -> None:
    acl = AllowList.from_cidrs(["fe80::/10"])

    assert acl.allows("fe80::1%eth0")


@pytest.mark.parametrize(
    ("cidrs", "error"),
    [
        (["10.0.0.0/8", "10.0.0.1/33"], r"entry 1: invalid CIDR '10\.0\.0\.1/33'"),
        (["10.0.0.1/8"], r"entry 0: invalid CIDR '10\.0\.0\.1/8'.*host bits"),
        (["54.172.60.0/30", "example.com"], r"entry 1: invalid CIDR 'example\.com'"),
        (["2001:db8::/129"], r"entry 0: invalid CIDR"),
        (["  "], "entry 0: empty CIDR entry"),
    ],
)
def test_bad_cidr_names_the_entry(cidrs: list[str], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        AllowList.from_cidrs(cidrs)


def test_parse_cidr_strips_whitespace() -> None:
    assert str(parse_cidr(" 10.0.0.0/8 ")) == "10.0.0.0/8"


def test_unparseable_ip_is_an_error() -> None:
    with pytest.raises(ValueError, match="invalid IP address"):
        AllowList.from_cidrs(["10.0.0.0/8"]).allows("10.0.0")


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        ("127.0.0.1:5060", ("127.0.0.1", 5060)),
        ("54.172.60.1:5061", ("54.172.60.1", 5061)),
        ("[::1]:5060", ("::1", 5060)),
        ("[2001:DB8:0::1]:5080", ("2001:db8::1", 5080)),
        (" 10.1.2.3:65535 ", ("10.1.2.3", 65535)),
    ],
)
def test_parse_source(src: str, expected: tuple[str, int]) -> None:
    assert parse_source(src) == expected


@pytest.mark.parametrize(
    ("src", "error"),
    [
        ("127.0.0.1", "expected 'ip:port'"),
        (":5060", "expected 'ip:port'"),
        ("::1:5060", "IPv6 needs"),
        ("[::1]5060", "expected ':port'"),
        ("[::1:5060", "missing ']'"),
        ("127.0.0.1:0", "bad source port"),
        ("127.0.0.1:65536", "bad source port"),
        ("127.0.0.1:http", "bad source port"),
        ("host.example:5060", "not an IP address"),
        ("[zz::1]:5060", "not an IP address"),
    ],
)
def test_parse_source_errors(src: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_source(src)
