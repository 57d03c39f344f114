"""Turn the user part of a SIP/tel URI into an E.164 number (``+<country code><number>``).

``normalize_e164(user, default_country_code)`` applies these rules, in order:

1. Anything from the first ``;`` on (user params such as ``;npdi;rn=…``) is dropped, then
   spaces, tabs and the RFC 3966 visual separators ``-`` ``.`` ``(`` ``)`` are removed.
2. What is left must be digits with at most one leading ``+``; anything else — names
   (``anonymous``, ``bot``), ``*``/``#`` service codes (``*67``, ``#31#``) — gives ``None``.
3. ``+<digits>``: kept as is when it has 7–15 digits and no leading 0 (E.164 caps numbers at
   15 digits; the shortest in use have 7).
4. ``00<digits>`` (the ITU international prefix) becomes ``+<digits>``; with country code 1
   (NANP) the North American prefix ``011`` does too. Same checks as rule 3.
5. National numbers, only when a default country code is given:
   - country code ``1``: 10 digits ``NXX NXX XXXX`` (area code and exchange start with 2–9),
     or the same with a leading ``1``, become ``+1…``;
   - other countries: a single leading ``0`` trunk prefix (UK ``020…``/``07…``, DE ``030…``)
     is replaced by ``+<cc>``, except where the 0 belongs to the number (Italy 39, San Marino
     378, Vatican 379: the 0 is kept). The national number must have at least
     ``min_national_digits`` digits (7 by default; lower it where short numbers are real).
6. Digits already carrying a default country code other than 1 (``4930123456`` with ``49``,
   at least ``min_national_digits`` after the code), or any 11–15 digit string not starting
   with 0 (carriers such as Vonage send ``447700900123`` without ``+``), become ``+<digits>``.
7. Everything else — extensions like ``100``, short codes, national numbers without a default
   country code — gives ``None``; callers keep the raw user part if they need it.
"""

from __future__ import annotations

import re

_SEPARATORS = str.maketrans("", "", " \t-.()")
_COUNTRY_CODE_RE = re.compile(r"[1-9][0-9]{0,2}")
_NANP_RE = re.compile(r"[2-9][0-9]{2}[2-9][0-9]{6}")
_ZERO_IS_PART_OF_NUMBER = frozenset({"39", "378", "379"})

E164_MIN_DIGITS = 7
E164_MAX_DIGITS = 15


def normalize_e164(
    user: str, default_country_code: str | None, *, min_national_digits: int = 7
) -> str | None:
    """The E.164 form of ``user`` (see the module docstring for the rules), or None."""
    cc = _check_country_code(default_country_code)
    digits = user.split(";", 1)[0].translate(_SEPARATORS)
    plus = digits.startswith("+")
    if plus:
        digits = digits[1:]
    if not digits or not digits.isdigit() or not digits.isascii():
        return None
    if plus:
        return _international(digits)
    if digits.startswith("00"):
        return _international(digits[2:])
    if cc == "1" and digits.startswith("011"):
        return _international(digits[3:])
    if cc is not None:
        national = _national(digits, cc, min_national_digits)
        if national is not None:
            return national
        has_cc = cc != "1" and digits.startswith(cc)  # NANP is fully handled by _national
        if has_cc and len(digits) >= len(cc) + min_national_digits:
            return _international(digits)
    if 11 <= len(digits) <= E164_MAX_DIGITS and digits[0] != "0":
        return _international(digits)
    return None


def _check_country_code(code: str | None) -> str | None:
    if code is None or code == "":
        return None
    code = code.removeprefix("+")
    if not _COUNTRY_CODE_RE.fullmatch(code):
        raise ValueError(f"bad country code {code[:10]!r}: expected 1–3 digits, not starting 0")
    return code


def _international(digits: str) -> str | None:
    if not E164_MIN_DIGITS <= len(digits) <= E164_MAX_DIGITS or digits[0] == "0":
        return None
    return "+" + digits


def _national(digits: str, cc: str, min_digits: int) -> str | None:
    if cc == "1":
        if len(digits) == 11 and digits[0] == "1":
            digits = digits[1:]
        return "+1" + digits if _NANP_RE.fullmatch(digits) else None
    if cc in _ZERO_IS_PART_OF_NUMBER:
        if digits[0] == "0" and len(digits) >= min_digits:
            return _international(cc + digits)
        return None
    if digits[0] == "0" and digits[1:2] != "0" and len(digits) - 1 >= min_digits:
        return _international(cc + digits[1:])
    return None
