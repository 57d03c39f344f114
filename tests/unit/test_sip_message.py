"""SipMessage: start lines, ordered headers, compact names, folding, body, limits, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from hitl_sip.sip.message import MAX_HEADERS, MAX_MESSAGE_BYTES, SipMessage, split_list

DATA = Path(__file__).parent / "data"


def wire(text: str) -> str:
    """Test text with LF line ends → SIP wire text with CRLF."""
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


def load_invite(name: str) -> str:
    return wire((DATA / name).read_text(encoding="utf-8"))


def test_parses_the_twilio_invite_start_line_and_headers_in_order() -> None:
    msg = SipMessage.parse(load_invite("twilio_invite.txt"))

    assert msg.is_request
    assert msg.method == "INVITE"
    assert msg.request_uri == "sip:+14155550100@hitl.example.com:5060;transport=udp"
    assert msg.status_code is None
    assert msg.headers[0][0] == "Via"
    assert msg.headers[-1] == ("Content-Length", "278")
    assert msg.get("x-twilio-callsid") == "CAfedcba9876543210fedcba9876543210"


def test_repeated_via_headers_survive_in_order() -> None:
    msg = SipMessage.parse(load_invite("twilio_invite.txt"))

    vias = msg.get_all("Via")
    assert len(vias) == 2
    assert vias[0].startswith("SIP/2.0/UDP 54.172.60.1:5060")
    assert vias[1].startswith("SIP/2.0/UDP 172.25.10.217:5060")
    assert msg.get("via") == vias[0]


def test_body_is_split_at_the_blank_line_and_bounded_by_content_length() -> None:
    msg = SipMessage.parse(load_invite("twilio_invite.txt"))

    assert msg.body.startswith("v=0\r\n")
    assert msg.body.endswith("a=sendrecv\r\n")
    assert len(msg.body.encode()) == 278


def test_compact_header_names_are_expanded() -> None:
    msg = SipMessage.parse(load_invite("vonage_invite.txt"))
    names = [name for name, _ in msg.headers]

    for full in ("Via", "From", "To", "Call-ID", "Contact", "Supported", "Session-Expires"):
        assert full in names
    assert "v" not in names
    assert msg.get("Call-ID") == "5b8e0d3a-2f1c-4e7a-9d6b-1a2b3c4d5e6f"
    assert msg.get("i") == msg.get("call-id")
    assert msg.get("Content-Type") == "application/sdp"
    assert msg.get("Content-Length") == str(len(msg.body.encode()))
    assert len(msg.get_all("v")) == 2


def test_folded_header_lines_are_joined_with_one_space() -> None:
    msg = SipMessage.parse(load_invite("vonage_invite.txt"))

    assert msg.get("X-customer_ref") == "order 12345, priority gold"


def test_get_values_splits_comma_lists_but_not_inside_quotes_or_brackets() -> None:
    msg = SipMessage.parse(
        wire(
            "OPTIONS sip:a@b SIP/2.0\n"
            "Supported: timer, 100rel\n"
            "Supported: replaces\n"
            'Diversion: "Doe, J" <sip:1@h;x=a,b>;reason=busy, <sip:2@h>\n'
            "\n"
        )
    )

    assert msg.get_values("k") == ["timer", "100rel", "replaces"]
    assert msg.get_values("Diversion") == ['"Doe, J" <sip:1@h;x=a,b>;reason=busy', "<sip:2@h>"]
    assert split_list(" , a ,, b ") == ["a", "b"]


def test_missing_header_gives_none_and_empty_list() -> None:
    msg = SipMessage.parse(wire("BYE sip:a@b SIP/2.0\nCall-ID: x\n\n"))

    assert msg.get("Diversion") is None
    assert msg.get_all("Diversion") == []


def test_parses_a_response_status_line() -> None:
    msg = SipMessage.parse(wire("SIP/2.0 486 Busy Here\nCall-ID: x\nContent-Length: 0\n\n"))

    assert not msg.is_request
    assert msg.status_code == 486
    assert msg.reason == "Busy Here"
    assert msg.method is None
    assert msg.body == ""


def test_response_with_empty_reason_phrase() -> None:
    assert SipMessage.parse("SIP/2.0 200 \r\n\r\n").reason == ""
    assert SipMessage.parse("SIP/2.0 200\r\n\r\n").status_code == 200


def test_tolerates_bare_lf_and_leading_crlf_keepalives() -> None:
    msg = SipMessage.parse("\r\n\r\nOPTIONS sip:a@b SIP/2.0\nCall-ID: y\n\nbody")

    assert msg.method == "OPTIONS"
    assert msg.get("Call-ID") == "y"
    assert msg.body == "body"


def test_message_without_blank_line_has_empty_body() -> None:
    msg = SipMessage.parse("OPTIONS sip:a@b SIP/2.0\r\nCall-ID: y\r\n")

    assert msg.body == ""
    assert msg.get("Call-ID") == "y"


def test_whitespace_before_colon_is_allowed() -> None:
    msg = SipMessage.parse("OPTIONS sip:a@b SIP/2.0\r\nCall-ID  :  z \r\n\r\n")

    assert msg.headers == [("Call-ID", "z")]


def test_accepts_bytes() -> None:
    raw = load_invite("vonage_invite.txt").encode()

    assert SipMessage.parse(raw).get("From") == SipMessage.parse(raw.decode()).get("From")


def test_serialize_round_trips() -> None:
    msg = SipMessage.parse(load_invite("twilio_invite.txt"))

    again = SipMessage.parse(msg.serialize())
    assert again == msg


def test_shorter_content_length_truncates_the_body() -> None:
    msg = SipMessage.parse("MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 3\r\n\r\nabcdef")

    assert msg.body == "abc"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "missing start line"),
        ("\r\n\r\n", "missing start line"),
        ("\r\nCall-ID: x\r\n", "malformed request line"),
        ("INVITE sip:a@b\r\n\r\n", "malformed request line"),
        ("INVITE sip:a@b SIP/3.0\r\n\r\n", "unsupported SIP version"),
        ("INV(TE sip:a@b SIP/2.0\r\n\r\n", "bad method"),
        ("SIP/2.0 99 Low\r\n\r\n", "bad status code"),
        ("SIP/2.0 700 High\r\n\r\n", "bad status code"),
        ("SIP/2.0 2x0 OK\r\n\r\n", "bad status code"),
        ("SIP/2.0\r\n\r\n", "malformed status line"),
        ("SIP/1.0 200 OK\r\n\r\n", "unsupported SIP version"),
        ("BYE sip:a@b SIP/2.0\r\nCall-ID x\r\n\r\n", "line 2: header without colon"),
        ("BYE sip:a@b SIP/2.0\r\n: x\r\n\r\n", "line 2: empty header name"),
        ("BYE sip:a@b SIP/2.0\r\nBad Name: x\r\n\r\n", "line 2: bad header name"),
        ("BYE sip:a@b SIP/2.0\r\n folded\r\n\r\n", "continuation line before any header"),
        ("BYE sip:a@b SIP/2.0\r\nContent-Length: ten\r\n\r\n", "bad Content-Length"),
        ("BYE sip:a@b SIP/2.0\r\nl: 10\r\n\r\nshort", "exceeds the 5 byte body"),
        ("BYE sip:a@b SIP/2.0\r\nl: 1\r\nl: 2\r\n\r\nab", "conflicting Content-Length"),
    ],
)
def test_malformed_messages_raise_precise_errors(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        SipMessage.parse(text)


def test_too_many_headers_is_an_error() -> None:
    text = "BYE sip:a@b SIP/2.0\r\n" + "X-A: 1\r\n" * (MAX_HEADERS + 1) + "\r\n"

    with pytest.raises(ValueError, match=f"more than {MAX_HEADERS} headers"):
        SipMessage.parse(text)


def test_exactly_the_header_limit_is_accepted() -> None:
    text = "BYE sip:a@b SIP/2.0\r\n" + "X-A: 1\r\n" * MAX_HEADERS + "\r\n"

    assert len(SipMessage.parse(text).headers) == MAX_HEADERS


def test_oversized_message_is_an_error() -> None:
    text = "MESSAGE sip:a@b SIP/2.0\r\n\r\n" + "x" * MAX_MESSAGE_BYTES

    with pytest.raises(ValueError, match="byte limit"):
        SipMessage.parse(text)
    with pytest.raises(ValueError, match="limit is"):
        SipMessage.parse(text.encode())


def test_size_limit_counts_utf8_bytes_not_characters() -> None:
    text = "MESSAGE sip:a@b SIP/2.0\r\n\r\n" + "é" * (MAX_MESSAGE_BYTES // 2)

    with pytest.raises(ValueError, match="byte limit"):
        SipMessage.parse(text)
