"""SipUri and NameAddr parsing: display names, users, hosts, ports, params, precise errors."""

from __future__ import annotations

import pytest

from hitl_sip.sip.uri import NameAddr, SipUri


def test_name_addr_with_quoted_display_name_uri_params_and_tag() -> None:
    addr = NameAddr.parse('"Alice" <sip:+14155550100@host;user=phone>;tag=abc')

    assert addr.display_name == "Alice"
    assert addr.scheme == "sip"
    assert addr.user == "+14155550100"
    assert addr.host == "host"
    assert addr.port is None
    assert addr.uri.params == {"user": "phone"}
    assert addr.params == {"tag": "abc"}
    assert addr.tag == "abc"


def test_addr_spec_with_port() -> None:
    addr = NameAddr.parse("sip:100@10.0.0.1:5060")

    assert addr.display_name is None
    assert (addr.user, addr.host, addr.port) == ("100", "10.0.0.1", 5060)
    assert addr.params == {}


def test_addr_spec_params_are_header_params() -> None:
    addr = NameAddr.parse("sip:100@10.0.0.1:5060;tag=x1")

    assert addr.tag == "x1"
    assert addr.uri.params == {}


def test_request_uri_params_are_uri_params() -> None:
    uri = SipUri.parse("sip:+14155550100@hitl.example.com:5060;transport=udp;lr")

    assert uri.params == {"transport": "udp", "lr": None}
    assert uri.port == 5060


def test_tel_uri_keeps_the_number_with_separators() -> None:
    uri = SipUri.parse("tel:+1-415-555-0100;phone-context=example.com")

    assert uri.scheme == "tel"
    assert uri.user == "+1-415-555-0100"
    assert uri.host == ""
    assert uri.params == {"phone-context": "example.com"}


def test_tel_uri_in_name_addr() -> None:
    addr = NameAddr.parse("<tel:+1-415-555-0100>;tag=9")

    assert addr.user == "+1-415-555-0100"
    assert addr.tag == "9"


def test_unquoted_display_name_tokens_are_joined() -> None:
    addr = NameAddr.parse("Bob  Smith <sip:bob@example.com>")

    assert addr.display_name == "Bob Smith"


def test_quoted_display_name_with_escapes() -> None:
    addr = NameAddr.parse(r'"Bob \"The Builder\" \\ Co" <sip:bob@example.com>')

    assert addr.display_name == 'Bob "The Builder" \\ Co'


def test_empty_quoted_display_name_is_none() -> None:
    assert NameAddr.parse('"" <sip:anonymous@anonymous.invalid>').display_name is None


def test_sips_ipv6_host_and_port() -> None:
    uri = SipUri.parse("sips:alice@[2001:db8::1]:5061;transport=tls")

    assert uri.scheme == "sips"
    assert uri.host == "2001:db8::1"
    assert uri.port == 5061


def test_user_is_percent_decoded_and_password_split() -> None:
    uri = SipUri.parse("sip:%2B14155550100:secret@Example.COM")

    assert uri.user == "+14155550100"
    assert uri.password == "secret"
    assert uri.host == "example.com"


def test_user_part_may_carry_telephone_subscriber_params() -> None:
    uri = SipUri.parse("sip:+14155550100;npdi;rn=+14155550000@carrier.example;user=phone")

    assert uri.user == "+14155550100;npdi;rn=+14155550000"
    assert uri.params == {"user": "phone"}


def test_uri_without_user() -> None:
    uri = SipUri.parse("sip:sip.nexmo.com")

    assert uri.user is None
    assert uri.host == "sip.nexmo.com"


def test_uri_headers() -> None:
    uri = SipUri.parse("sip:bob@example.com?subject=project%20x&priority=urgent")

    assert uri.headers == {"subject": "project x", "priority": "urgent"}


def test_header_params_may_be_quoted_and_contain_semicolons() -> None:
    addr = NameAddr.parse('<sip:1@h>;reason="a;b";counter=1;privacy=off')

    assert addr.params == {"reason": "a;b", "counter": "1", "privacy": "off"}


def test_param_names_are_lowercased() -> None:
    assert NameAddr.parse("<sip:1@h>;TAG=Ab").params == {"tag": "Ab"}


def test_serialize_round_trips() -> None:
    text = "sip:alice:pw@[2001:db8::1]:5061;transport=tls;lr?subject=x"

    assert SipUri.parse(SipUri.parse(text).serialize()) == SipUri.parse(text)
    assert SipUri.parse("tel:+14155550100;ext=1").serialize() == "tel:+14155550100;ext=1"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "empty name-addr"),
        ("*", "wildcard"),
        ('"Alice <sip:a@b>', "unterminated quoted string"),
        ('"Alice" sip:a@b', "expected '<'"),
        ("Alice <sip:a@b", "missing '>'"),
        ("Alice <>", "empty URI"),
        ("<sip:a@b> junk", "unexpected text after the URI"),
        ("<sip:a@b>;", "empty parameter name"),
        ("<sip:a@b>;tag=1;tag=2", "duplicate parameter 'tag'"),
        ("<sip:a@b>;tag=", "has '=' but no value"),
        ("<sip:a@b>;t@g=1", "bad parameter name"),
        ('<sip:a@b>;reason="x', "unterminated quoted string"),
        ('<sip:a@b>;reason="x" y', "unexpected text after quoted value"),
        ("sip:a@b, sip:c@d", "must be in '<…>'"),
        ('Al"ice <sip:a@b>', "stray"),
    ],
)
def test_bad_name_addr_raises_precise_error(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        NameAddr.parse(text)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "empty URI"),
        ("alice@example.com", "without scheme"),
        (":alice@example.com", "without scheme"),
        ("http://example.com", "unsupported URI scheme 'http'"),
        ("sip:@example.com", "empty user part"),
        ("sip:alice@", "empty host"),
        ("sip:alice@exa mple.com", "bad host"),
        ("sip:alice@-bad-.com", "bad host"),
        ("sip:alice@example.com:0", "bad port"),
        ("sip:alice@example.com:70000", "bad port"),
        ("sip:alice@example.com:50a", "bad port"),
        ("sip:alice@[2001:db8::1", "missing ']'"),
        ("sip:alice@[not-v6]", "bad IPv6 address"),
        ("sip:alice@[::1]x", "unexpected text after IPv6"),
        ("sip:alice@example.com;transport=udp;transport=tcp", "duplicate parameter"),
        ("sip:alice@example.com?subject", "bad URI header"),
        ("tel:", "empty tel: number"),
        ("tel:+1-415-CALL-ME", "bad tel: number"),
        ("tel:+1+2", "bad tel: number"),
        ("sip:al ice@example.com", "bad character in user part"),
    ],
)
def test_bad_uri_raises_precise_error(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        SipUri.parse(text)
