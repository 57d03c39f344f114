"""Trunk-profile features against real SIP peers: published address and RTP range in what
the server sends, inbound digest auth, outbound REGISTER to a provider's registrar."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.net import free_port
from tests.support.server import running_server
from tests.support.sipp import SCENARIOS, SIPP, SippResult, run_sipp

pytestmark = pytest.mark.sipp


def test_public_address_and_rtp_range_are_what_the_caller_sees(tmp_path: Path) -> None:
    profile = tmp_path / "nat.toml"
    profile.write_text(
        'name = "nat"\n[allow]\ncidrs = ["127.0.0.0/8"]\n'
        '[nat]\npublic_address = "203.0.113.10"\n[rtp]\nport_start = 40000\nport_end = 40099\n'
    )
    # the worker's own NAT rewriting (Contact, SDP c=, RTP ports), without the front: on
    # loopback nothing can reach the advertised 203.0.113.10 the front would record-route
    # (its `advertise` is checked in tests/unit/test_front.py)
    with running_server(tmp_path, profile=str(profile), extra={"front": {"mode": "none"}},
                        sip={"port": free_port()}) as srv:
        result = run_sipp("nat_call", srv.sip_port(), tmp_path)
        assert isinstance(result, SippResult)
        assert result.ok, result.explain()


def _auth_profile(path: Path) -> Path:
    path.write_text(
        'name = "auth"\n[allow]\ncidrs = ["127.0.0.0/8"]\n'
        '[auth]\nenabled = true\nrealm = "hitl-sip"\nusers = { carrier = "s3cret" }\n'
    )
    return path


def test_digest_auth_challenges_and_admits_the_right_credentials(tmp_path: Path) -> None:
    with running_server(tmp_path, profile=str(_auth_profile(tmp_path / "auth.toml"))) as srv:
        result = run_sipp("auth_call", srv.sip_port(), tmp_path,
                          extra=["-au", "carrier", "-ap", "s3cret"])
        assert isinstance(result, SippResult)
        assert result.ok, result.explain()
        srv.wait_for(lambda: srv.metric("hitl_sip_calls_total", outcome="completed") == 1,
                     what="authenticated call completed")
        assert srv.metric("hitl_sip_calls_total", outcome="challenged") == 1


def test_digest_auth_refuses_a_wrong_password(tmp_path: Path) -> None:
    with running_server(tmp_path, profile=str(_auth_profile(tmp_path / "auth.toml"))) as srv:
        result = run_sipp("auth_call", srv.sip_port(), tmp_path,
                          extra=["-au", "carrier", "-ap", "wrong"], timeout=5)
        assert isinstance(result, SippResult)
        assert not result.ok, "a wrong password must not get a call through"
        srv.wait_for(lambda: srv.metric("hitl_sip_calls_total", outcome="rejected_auth") == 1,
                     what="wrong password counted")
        assert srv.metric("hitl_sip_calls_total", outcome="completed") == 0


def _registrar(
    tmp_path: Path, port: int, scenario: str = "registrar", expires: int = 120
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [SIPP, "-sf", str(SCENARIOS / f"{scenario}.xml"), "-i", "127.0.0.1", "-p", str(port),
         "-m", "1", "-key", "expires", str(expires), "-nostdin", "-nd", "-timeout", "30s",
         "-trace_err", "-error_file", str(tmp_path / "registrar-errors.log")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _register_profile(path: Path, port: int, password: str) -> Path:
    path.write_text(
        'name = "reg"\n[allow]\ncidrs = ["127.0.0.0/8"]\n'
        f'[register]\nenabled = true\nregistrar = "sip:127.0.0.1:{port}"\n'
        f'username = "trunkuser"\npassword = "{password}"\naor = "sip:trunkuser@127.0.0.1"\n'
        "expires = 120\nretry_interval = 5\n"
    )
    return path


def test_outbound_register_authenticates_and_is_reported_active(tmp_path: Path) -> None:
    port = free_port()
    registrar = _registrar(tmp_path, port)
    try:
        profile = _register_profile(tmp_path / "reg.toml", port, "trunkpass")
        with running_server(tmp_path, profile=str(profile)) as srv:
            srv.wait_for(lambda: srv.metric("hitl_sip_registration_active", account="trunk") == 1,
                         timeout=15, what="registration active")
        out, _ = registrar.communicate(timeout=30)
        assert registrar.returncode == 0, out
    finally:
        registrar.kill()


def test_registration_is_refreshed_before_the_granted_expiry(tmp_path: Path) -> None:
    # The registrar grants 8 s although we ask for 120; pjsua refreshes ~5 s before expiry.
    port = free_port()
    registrar = _registrar(tmp_path, port, "registrar_refresh", expires=8)
    try:
        profile = _register_profile(tmp_path / "reg.toml", port, "trunkpass")
        with running_server(tmp_path, profile=str(profile)) as srv:
            out, _ = registrar.communicate(timeout=30)
            assert registrar.returncode == 0, out
            assert srv.metric("hitl_sip_registration_active", account="trunk") == 1
            assert srv.log().count("registration trunk active") >= 2, srv.log()
    finally:
        registrar.kill()


def test_refused_register_is_logged_and_reported_inactive(tmp_path: Path) -> None:
    port = free_port()
    registrar = _registrar(tmp_path, port)
    try:
        profile = _register_profile(tmp_path / "reg.toml", port, "not-the-password")
        with running_server(tmp_path, profile=str(profile)) as srv:
            srv.wait_for(lambda: "registration trunk failed" in srv.log(), timeout=15,
                         what="registration failure logged")
            assert "403" in srv.log()
            assert srv.metric("hitl_sip_registration_active", account="trunk") == 0
            assert srv.health()[0] == 200, "a failed registration must not take the server down"
    finally:
        registrar.kill()


def test_profile_codecs_limit_what_is_negotiated(tmp_path: Path) -> None:
    profile = tmp_path / "alaw.toml"
    profile.write_text(
        'name = "alaw"\n[allow]\ncidrs = ["127.0.0.0/8"]\n[codecs]\norder = ["PCMA"]\n'
    )
    with running_server(tmp_path, profile=str(profile)) as srv:
        result = run_sipp("short_call", srv.sip_port(), tmp_path)  # offers PCMU, PCMA
        assert isinstance(result, SippResult)
        assert result.ok, result.explain()
        srv.wait_for(lambda: len(srv.call_records()) == 1, what="call record")
        assert srv.call_records()[0]["codec"] == "PCMA"
