"""Admission of INVITEs: allow-list first, then digest auth, then drain and capacity."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hitl_sip.sip.digest import compute_response
from hitl_sip.sip.profile import parse_profile
from hitl_sip.worker.admission import Admission

DATA = Path(__file__).parent / "data"
TWILIO_INVITE = (DATA / "twilio_invite.txt").read_text().replace("\n", "\r\n")
TWILIO_SOURCE = "54.172.60.1:5060"

TWILIO_LIKE = """
name = "t"
[allow]
cidrs = ["54.172.60.0/30"]
[headers]
map = { "X-Twilio-CallSid" = "twilio_call_sid" }
[numbers]
default_country_code = "1"
"""


def admission(profile_text: str = TWILIO_LIKE, max_calls: int = 3) -> Admission:
    return Admission(parse_profile(profile_text, env={}), max_calls, 30, b"k" * 32)


def test_allowed_source_is_admitted_with_call_metadata() -> None:
    d = admission().decide(TWILIO_SOURCE, TWILIO_INVITE, active=0, draining=False)
    assert d.status == 0
    assert d.metadata["caller_number"] == "+12025550123"
    assert d.metadata["called_number"] == "+14155550100"
    assert d.metadata["caller_name"] == "ALICE SMITH"
    assert d.metadata["headers"] == {"twilio_call_sid": "CAfedcba9876543210fedcba9876543210"}
    assert d.metadata["trunk"] == "t"


def test_source_outside_the_allow_list_gets_the_same_403_whatever_the_number() -> None:
    a = admission()
    other_number = TWILIO_INVITE.replace("+14155550100", "+19995550000")
    first = a.decide("8.8.8.8:5060", TWILIO_INVITE, active=0, draining=False)
    second = a.decide("8.8.8.8:5060", other_number, active=0, draining=False)
    assert (first.status, first.reason, first.headers) == (403, "Forbidden", ())
    assert first == second


def test_forbidden_wins_over_capacity_and_drain() -> None:
    d = admission().decide("8.8.8.8:5060", TWILIO_INVITE, active=99, draining=True)
    assert d.status == 403


def test_beyond_capacity_gets_503_with_retry_after() -> None:
    d = admission(max_calls=2).decide(TWILIO_SOURCE, TWILIO_INVITE, active=2, draining=False)
    assert (d.status, d.outcome) == (503, "rejected_capacity")
    assert ("Retry-After", "30") in d.headers


def test_draining_worker_answers_503() -> None:
    d = admission().decide(TWILIO_SOURCE, TWILIO_INVITE, active=0, draining=True)
    assert (d.status, d.outcome) == (503, "rejected_draining")


def test_unparsable_source_is_forbidden() -> None:
    assert admission().decide("garbage", TWILIO_INVITE, 0, False).status == 403


@pytest.mark.parametrize(
    ("raw", "status", "detail"),
    [
        ("INVITE nonsense", 400, "no end of headers"),
        (TWILIO_INVITE.replace("Content-Length: 278", "Content-Length: 9999"), 400,
         "Content-Length does not match the body"),
        (TWILIO_INVITE.replace("Content-Length: 278", "Content-Length: 5"), 400,
         "Content-Length does not match the body"),
        (TWILIO_INVITE.replace("Content-Length: 278", "Content-Length: -5"), 400,
         "invalid Content-Length"),
        (TWILIO_INVITE.replace("Content-Length: 278", "Content-Length: 278\r\nl: 278"), 400,
         "repeated Content-Length"),
        (TWILIO_INVITE.replace("SIP/2.0/UDP 54.172", "SIP/2.0/FOO 54.172"), 400,
         "unknown Via transport"),
        (TWILIO_INVITE.replace("Max-Forwards: 68", "X-Pad: " + "a" * 3000), 513, ""),
        (TWILIO_INVITE.replace("Max-Forwards: 68", "\r\n".join(f"X{i}:v" for i in range(201))),
         400, "unparsable message"),
    ],
)
def test_malformed_invites_get_a_precise_error(raw: str, status: int, detail: str) -> None:
    d = admission().decide(TWILIO_SOURCE, raw, active=0, draining=False)
    assert d.status == status
    assert d.outcome == "rejected_malformed"
    assert detail in d.reason


AUTH_PROFILE = """
name = "auth"
[allow]
cidrs = ["127.0.0.0/8"]
[auth]
enabled = true
realm = "hitl"
users = { carrier = "s3cret" }
"""


def _authorization(challenge: str, password: str) -> str:
    nonce = re.search(r'nonce="([^"]+)"', challenge)
    assert nonce is not None
    uri = "sip:+14155550100@hitl.example.com:5060;transport=udp"
    response = compute_response(
        algorithm="MD5", username="carrier", realm="hitl", password=password, method="INVITE",
        uri=uri, nonce=nonce.group(1), nc="00000001", cnonce="abc",
    )
    return (
        f'Digest username="carrier", realm="hitl", nonce="{nonce.group(1)}", uri="{uri}", '
        f'response="{response}", algorithm=MD5, qop=auth, nc=00000001, cnonce="abc"'
    )


def _with_authorization(invite: str, value: str) -> str:
    return invite.replace("Max-Forwards: 68\r\n", f"Max-Forwards: 68\r\nAuthorization: {value}\r\n")


def test_digest_auth_challenges_then_admits_the_right_password() -> None:
    a = admission(AUTH_PROFILE)
    first = a.decide("127.0.0.1:5060", TWILIO_INVITE, 0, False)
    assert (first.status, first.outcome) == (401, "challenged")
    challenge = dict(first.headers)["WWW-Authenticate"]
    assert challenge.startswith("Digest ")
    good = _with_authorization(TWILIO_INVITE, _authorization(challenge, "s3cret"))
    assert a.decide("127.0.0.1:5060", good, 0, False).status == 0
    bad = _with_authorization(TWILIO_INVITE, _authorization(challenge, "wrong"))
    refused = a.decide("127.0.0.1:5060", bad, 0, False)
    assert (refused.status, refused.outcome) == (401, "rejected_auth")


def test_auth_is_checked_before_capacity_so_strangers_learn_nothing_about_load() -> None:
    d = admission(AUTH_PROFILE).decide("127.0.0.1:5060", TWILIO_INVITE, active=99, draining=False)
    assert d.status == 401


def test_admission_is_pure_it_does_not_load_the_sip_stack() -> None:
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    code = "import sys, hitl_sip.worker.admission; print('pjsua2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
