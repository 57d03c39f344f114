"""normalize_e164: the documented rules, country by country."""

from __future__ import annotations

import pytest

from hitl_sip.sip.e164 import normalize_e164


@pytest.mark.parametrize(
    ("user", "cc", "expected"),
    [
        # Already E.164, with or without visual separators (any default country code).
        ("+14155550100", "1", "+14155550100"),
        ("+14155550100", None, "+14155550100"),
        ("+1-415-555-0100", None, "+14155550100"),
        ("+1 (415) 555.0100", "44", "+14155550100"),
        ("+44 20 7946 0000", "1", "+442079460000"),
        # User params are dropped.
        ("+14155550100;npdi;rn=+14155550000", None, "+14155550100"),
        # 00 international prefix; 011 only within NANP.
        ("0044 7700 900123", "49", "+447700900123"),
        ("00447700900123", None, "+447700900123"),
        ("011447700900123", "1", "+447700900123"),
        ("011447700900123", "44", None),  # 011 is not international in the UK
        # US / NANP national numbers.
        ("4155550100", "1", "+14155550100"),
        ("(415) 555-0100", "1", "+14155550100"),
        ("14155550100", "1", "+14155550100"),
        ("1-415-555-0100", "1", "+14155550100"),
        ("1155550100", "1", None),  # area code cannot start with 1
        ("4151550100", "1", None),  # exchange cannot start with 1
        ("5550100", "1", None),  # 7-digit local dialling has no area code
        # UK: trunk prefix 0.
        ("020 7946 0000", "44", "+442079460000"),
        ("07700 900123", "44", "+447700900123"),
        ("447700900123", "44", "+447700900123"),
        # Germany: trunk prefix 0, numbers of varying length.
        ("030 1234567", "49", "+49301234567"),
        ("0170-1234567", "49", "+491701234567"),
        ("4930123456", "49", "+4930123456"),
        # Italy keeps its leading 0.
        ("06 6988 0000", "39", "+390669880000"),
        # International numbers sent without '+' (as Vonage does), any country code.
        ("447700900123", "1", "+447700900123"),
        ("447700900123", None, "+447700900123"),
        ("14155550100", None, "+14155550100"),
        # National numbers without a default country code cannot be placed.
        ("4155550100", None, None),
        ("07700900123", None, None),
        ("020 7946 0000", "", None),
        # Non-numbers.
        ("anonymous", "1", None),
        ("Anonymous", None, None),
        ("bot", "1", None),
        ("", "1", None),
        ("+", "1", None),
        ("abc123", "1", None),
        ("+1415555010a", "1", None),
        ("1+4155550100", "1", None),
        # Extensions and short codes.
        ("100", "1", None),
        ("100", "49", None),
        ("0100", "49", None),
        ("911", "1", None),
        # Star and hash service codes.
        ("*67", "1", None),
        ("*674155550100", "1", None),
        ("#31#", "49", None),
        ("4155550100#", "1", None),
        # E.164 length bounds: 7–15 digits, no leading 0 after '+'.
        ("+1234567890123456", None, None),
        ("+123456", None, None),
        ("+2901234", None, "+2901234"),
        ("+0441234567", None, None),
        ("0000441234567", None, None),
        # Trunk prefix followed by too few digits.
        ("012345", "44", None),
    ],
)
def test_normalize_e164(user: str, cc: str | None, expected: str | None) -> None:
    assert normalize_e164(user, cc) == expected


def test_country_code_may_carry_a_plus() -> None:
    assert normalize_e164("07700 900123", "+44") == "+447700900123"


def test_min_national_digits_admits_short_national_numbers() -> None:
    assert normalize_e164("0123456", "43") is None
    assert normalize_e164("0123456", "43", min_national_digits=6) == "+43123456"


@pytest.mark.parametrize("cc", ["0", "01", "1234", "x", "+"])
def test_bad_default_country_code_is_an_error(cc: str) -> None:
    with pytest.raises(ValueError, match="bad country code"):
        normalize_e164("4155550100", cc)
