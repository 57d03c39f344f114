"""Call metadata from real-looking Twilio and Vonage INVITEs, and the header mapping rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from hitl_sip.sip.message import SipMessage
from hitl_sip.sip.metadata import HeaderMapping, clean_value, extract_call_metadata
from hitl_sip.sip.profile import load_profile

DATA = Path(__file__).parent / "data"
PROFILES = Path(__file__).parents[2] / "sip_profiles"


def load_invite(name: str) -> SipMessage:
    text = (DATA / name).read_text(encoding="utf-8").replace("\n", "\r\n")
    return SipMessage.parse(text)


def request(*headers: str, uri: str = "sip:+14155550100@hitl.example.com") -> SipMessage:
    return SipMessage.parse(f"INVITE {uri} SIP/2.0\r\n" + "".join(h + "\r\n" for h in headers))


def test_twilio_invite_end_to_end() -> None:
    profile = load_profile("twilio", PROFILES, env={})

    meta = extract_call_metadata(
        load_invite("twilio_invite.txt"), profile.header_mapping, profile.default_country_code
    )

    assert meta.sip_call_id == "0a6e7c5f3b2d4e1f9a8b7c6d5e4f3a2b@0.0.0.0"
    assert meta.caller_number == "+12025550123"
    assert meta.caller_display_name == "ALICE SMITH"
    assert meta.called_number == "+14155550100"
    assert meta.diversion == "+14155550199"
    assert meta.diversion_reason == "unconditional"
    assert meta.headers["twilio_call_sid"] == "CAfedcba9876543210fedcba9876543210"
    assert meta.headers["twilio_account_sid"] == "AC0123456789abcdef0123456789abcdef"
    assert meta.headers["twilio_verstat"] == "TN-Validation-Passed-A"
    assert len(meta.headers["stir_identity"]) == 256
    assert meta.headers["stir_identity"].startswith("eyJhbGciOiJFUzI1NiIs")
    assert set(meta.headers) == {
        "twilio_call_sid",
        "twilio_account_sid",
        "twilio_verstat",
        "stir_identity",
    }


def test_vonage_invite_end_to_end() -> None:
    profile = load_profile("vonage", PROFILES, env={})

    meta = extract_call_metadata(
        load_invite("vonage_invite.txt"), profile.header_mapping, profile.default_country_code
    )

    assert meta.sip_call_id == "5b8e0d3a-2f1c-4e7a-9d6b-1a2b3c4d5e6f"
    assert meta.caller_number == "+447700900123"
    assert meta.caller_display_name == "447700900123"
    assert meta.called_number == "+442079460000"
    assert meta.diversion is None
    assert meta.headers == {
        "vonage_call_uuid": "63f61863-4a51-4f6b-86e1-46edebcf9356",
        "vonage_conversation_uuid": "CON-f972836a-550f-45fa-956c-12a2ab5b7d22",
        "X-Vonage-Region": "eu-west-1",
        "X-customer_ref": "order 12345, priority gold",
    }


def test_anonymous_caller_keeps_the_raw_user() -> None:
    msg = request(
        'From: "Anonymous" <sip:anonymous@anonymous.invalid>;tag=1',
        "To: <sip:+14155550100@hitl.example.com>",
        "Call-ID: c1",
    )

    meta = extract_call_metadata(msg, HeaderMapping(), "1")

    assert meta.caller_number == "anonymous"
    assert meta.caller_display_name == "Anonymous"


def test_national_numbers_get_the_default_country_code() -> None:
    msg = request(
        "From: <sip:4155550123@pbx.example>;tag=1",
        "To: <sip:100@hitl.example.com>",
        "Call-ID: c1",
        uri="sip:02079460000@hitl.example.com",
    )

    assert extract_call_metadata(msg, HeaderMapping(), "44").called_number == "+442079460000"
    assert extract_call_metadata(msg, HeaderMapping(), "1").caller_number == "+14155550123"


def test_called_number_falls_back_to_the_to_user() -> None:
    msg = request(
        "From: <sip:100@pbx.example>;tag=1",
        "To: <tel:+1-415-555-0100>",
        "Call-ID: c1",
        uri="sip:hitl.example.com",
    )

    meta = extract_call_metadata(msg, HeaderMapping(), None)

    assert meta.called_number == "+14155550100"
    assert meta.caller_number == "100"


def test_unparseable_from_leaves_caller_fields_empty() -> None:
    msg = request("From: <sip:alice@", "Call-ID: c1")

    meta = extract_call_metadata(msg, HeaderMapping(), "1")

    assert meta.caller_number is None
    assert meta.caller_display_name is None
    assert meta.called_number == "+14155550100"


def test_diversion_takes_the_most_recent_entry() -> None:
    msg = request(
        "From: <sip:+12025550123@h>;tag=1",
        "Call-ID: c1",
        "Diversion: <sip:4155550111@h>;reason=user-busy, <sip:+14155550122@h>;reason=no-answer",
        "Diversion: <sip:+14155550133@h>",
    )

    meta = extract_call_metadata(msg, HeaderMapping(), "1")

    assert meta.diversion == "+14155550111"
    assert meta.diversion_reason == "user-busy"


def test_values_are_cleaned_and_truncated() -> None:
    msg = request(
        'From: "Eve\u202e\u0007 Mallory" <sip:+12025550123@h>;tag=1',
        "Call-ID: c1",
        "X-Note: " + "a\tb" + "x" * 400,
    )

    meta = extract_call_metadata(msg, HeaderMapping(passthrough_x=True), "1")

    assert meta.caller_display_name == "Eve Mallory"
    assert meta.headers["X-Note"].startswith("abx")
    assert len(meta.headers["X-Note"]) == 256


def test_clean_value_removes_control_characters() -> None:
    assert clean_value("a\x00b\x1bc\x7fd\u0085e\u200ff") == "abcdef"
    assert clean_value("  spaced  ") == "spaced"
    assert clean_value("x" * 10, 4) == "xxxx"


def test_response_or_missing_call_id_is_an_error() -> None:
    with pytest.raises(ValueError, match="needs a request"):
        extract_call_metadata(SipMessage.parse("SIP/2.0 200 OK\r\n\r\n"), HeaderMapping(), "1")
    with pytest.raises(ValueError, match="no Call-ID"):
        extract_call_metadata(request("From: <sip:a@b>;tag=1"), HeaderMapping(), "1")


def test_exact_rules_beat_prefixes_and_passthrough() -> None:
    mapping = HeaderMapping({"X-Vonage-Uuid": "call_uuid"}, ("X-Vonage-",), passthrough_x=True)

    assert mapping.key_for("x-vonage-uuid") == "call_uuid"
    assert mapping.key_for("X-VONAGE-Region") == "X-VONAGE-Region"
    assert mapping.key_for("X-Other") == "X-Other"
    assert mapping.key_for("Identity") is None


def test_prefixes_only_without_passthrough() -> None:
    mapping = HeaderMapping({}, ("X-Vonage-",), passthrough_x=False)

    assert mapping.key_for("X-Vonage-Region") == "X-Vonage-Region"
    assert mapping.key_for("X-Other") is None


def test_compact_names_in_the_exact_map_mean_the_full_header() -> None:
    mapping = HeaderMapping({"y": "stir_identity"})

    assert mapping.key_for("Identity") == "stir_identity"


def test_first_occurrence_of_a_mapped_header_wins() -> None:
    mapping = HeaderMapping({"X-A": "a"})

    assert mapping.extract([("X-A", "1"), ("x-a", "2")]) == {"a": "1"}


def test_exact_names_differing_only_by_case_are_rejected() -> None:
    with pytest.raises(ValueError, match="only by case"):
        HeaderMapping({"X-A": "a", "x-a": "b"})
