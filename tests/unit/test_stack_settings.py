"""What a worker's SIP stack is told from the configuration and the trunk profile: TLS ends
at the front, and the profile's SRTP policy becomes pjmedia's."""

from __future__ import annotations

from dataclasses import replace

import pjsua2 as pj
import pytest

from hitl_sip.config import load_config
from hitl_sip.errors import SipError
from hitl_sip.sip.profile import Srtp, parse_profile
from hitl_sip.worker.pjsip import SRTP_USE, StackSettings, VectorWriter, contact_host, pj_media_host
from hitl_sip.worker.service import stack_settings


def test_the_profile_srtp_policy_reaches_the_stack() -> None:
    config = load_config(None, env={}, overrides={"sip.transports": "udp,tcp,tls"})
    for srtp in Srtp:
        profile = parse_profile(f'name = "x"\n[rtp]\nsrtp = "{srtp.value}"', env={})
        assert stack_settings(config, profile, 0, sip_port=6001).srtp == srtp.value
    assert SRTP_USE == {"off": pj.PJMEDIA_SRTP_DISABLED, "optional": pj.PJMEDIA_SRTP_OPTIONAL,
                        "mandatory": pj.PJMEDIA_SRTP_MANDATORY}


def test_a_worker_behind_a_tls_front_listens_on_udp_and_tcp_only() -> None:
    profile = parse_profile('name = "x"', env={})
    config = load_config(None, env={}, overrides={"sip.transports": "udp,tcp,tls"})
    assert stack_settings(config, profile, 0, sip_port=6001).transports == ("udp", "tcp")
    only_tls = load_config(None, env={}, overrides={"sip.transports": "tls"})
    assert stack_settings(only_tls, profile, 0, sip_port=6001).transports == ("udp",)


def test_a_refer_goes_to_the_host_of_the_trunk_s_contact_by_default() -> None:
    assert contact_host("<sip:sipp@127.0.0.1:5061;transport=UDP>") == "127.0.0.1:5061"
    assert contact_host('"Twilio" <sip:+14155550100@54.172.60.1>;expires=60') == "54.172.60.1"
    assert contact_host("<sip:[2001:db8::7]:5060>") == "[2001:db8::7]:5060"
    for bad in ("", "<>", "garbage"):
        with pytest.raises(SipError):
            contact_host(bad)


def test_vector_writer_fills_frames_in_place() -> None:
    """One reused vector, overwritten with memmove: each frame gets exactly its bytes, and
    the frame keeps them when the writer moves on (frame.buf is a copy)."""
    writer = VectorWriter(160)
    assert writer.fast
    first, second = pj.MediaFrame(), pj.MediaFrame()
    writer.fill(first, bytes(range(160)))
    writer.fill(second, bytes(reversed(range(160))))
    assert bytes(first.buf) == bytes(range(160))
    assert bytes(second.buf) == bytes(reversed(range(160)))
    odd = pj.MediaFrame()
    writer.fill(odd, b"\x01\x02\x03")  # another size: the slow path, still exact
    assert bytes(odd.buf) == b"\x01\x02\x03"


def test_pjmedia_listens_on_loopback_only_when_every_call_has_a_relay() -> None:
    relayed = StackSettings(host="203.0.113.10", trunk_relay=True, clock_rate=8000, srtp="off")
    assert pj_media_host(relayed) == "127.0.0.1"
    assert pj_media_host(replace(relayed, host="")) == "127.0.0.1"  # every address
    # a call without a relay needs pjmedia where the trunk can reach it
    for settings in (replace(relayed, trunk_relay=False),
                     replace(relayed, srtp="optional"),  # an SAVP call has no relay
                     replace(relayed, clock_rate=16000),
                     replace(relayed, host="2001:db8::10")):  # the relay's sockets are IPv4
        assert pj_media_host(settings) == settings.host
    # worker.trunk_relay relays every call with the profile's defaults
    config = load_config(None, env={}, overrides={"sip.host": "203.0.113.10",
                                                  "front.media": "direct",
                                                  "worker.trunk_relay": "true"})
    settings = stack_settings(config, parse_profile('name = "x"', env={}), 0, sip_port=6001)
    assert pj_media_host(settings) == "127.0.0.1"
