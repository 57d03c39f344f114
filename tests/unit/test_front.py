"""The Kamailio front's generated configuration, and a worker behind it: it takes INVITEs
only from the front and judges the trunk's own address (X-Hitl-Source) like a direct one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hitl_sip.config import Config, load_config, uses_front
from hitl_sip.errors import ConfigError
from hitl_sip.front.certs import TlsPair, tls_pair
from hitl_sip.front.kamailio import (
    KamailioFront,
    render_addresses,
    render_config,
    render_dispatcher,
    render_tls,
    write_files,
)
from hitl_sip.sip.acl import AllowList
from hitl_sip.sip.profile import parse_profile
from hitl_sip.worker.admission import Admission
from tests.unit.test_admission import TWILIO_INVITE, TWILIO_LIKE, TWILIO_SOURCE

FRONT = "10.9.0.2"


def config(**overrides: str) -> Config:
    return load_config(None, env={}, overrides={"worker.count": "3", "sip.port": "5070",
                                                "sip.host": "127.0.0.1", **overrides})


def behind_front() -> Admission:
    return Admission(parse_profile(TWILIO_LIKE, env={}), 3, 30, b"k" * 32,
                     front=frozenset({FRONT}))


def via_front(invite: str, *sources: str) -> str:
    head, sep, body = invite.partition("\r\n\r\n")
    extra = "".join(f"\r\nX-Hitl-Source: {s}" for s in sources)
    return head + extra + sep + body


def test_dispatcher_caps_each_worker_at_its_call_limit() -> None:
    text = render_dispatcher(config(**{"worker.max_calls": "2"}), [6001, 6002, 6003])
    rows = [r.split() for r in text.splitlines() if not r.startswith("#")]
    assert [r[1] for r in rows] == [f"sip:127.0.0.1:{p};transport=udp" for p in (6001, 6002, 6003)]
    assert [r[4] for r in rows] == [f"duid=w{i};maxload=2" for i in (1, 2, 3)]


def test_the_allow_list_becomes_permissions_address_rows() -> None:
    allow = AllowList.from_cidrs(["54.172.60.0/30", "2001:db8::/32"])
    rows = [r for r in render_addresses(allow).splitlines() if not r.startswith("#")]
    assert rows == ["1 54.172.60.0 30 0", "1 2001:db8:: 32 0"]


def test_script_has_flood_limits_allow_list_and_a_503_with_retry_after() -> None:
    c = config(**{"front.pike_density": "12", "front.pike_window": "3"})
    text = render_config(c, AllowList.from_cidrs(["10.0.0.0/8"]), None, Path("/d"), Path("/a"),
                         secret="0" * 32)
    assert 'modparam("pike", "reqs_density_per_unit", 12)' in text
    assert 'modparam("pike", "sampling_time_unit", 3)' in text
    assert 'allow_source_address("1")' in text
    assert 'ds_select_dst("1", "10")' in text
    assert f"Retry-After: {c.worker.retry_after}" in text
    assert "listen=udp:127.0.0.1:5070" in text
    anyone = render_config(c, AllowList(allow_any=True), "203.0.113.7", Path("/d"), Path("/a"),
                           secret="0" * 32)
    assert "allow_source_address" not in anyone
    assert "advertise 203.0.113.7:5070" in anyone


@pytest.mark.parametrize("allow", [AllowList.from_cidrs(["127.0.0.0/8"]),
                                   AllowList(allow_any=True)], ids=["allow-list", "anyone"])
def test_kamailio_itself_accepts_the_generated_configuration(tmp_path: Path,
                                                             allow: AllowList) -> None:
    c = config()
    files = write_files(c, tmp_path, allow, None, [6001, 6002, 6003])
    assert asyncio.run(KamailioFront(c, files, tmp_path / "run").check()) is None
    # private: the script holds the key of the dialog tokens
    assert files.cfg.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "front.key").stat().st_mode & 0o777 == 0o600
    assert tmp_path.stat().st_mode & 0o777 == 0o700
    files.cfg.write_text(files.cfg.read_text().replace("request_route {", "request_route {{"))
    assert asyncio.run(KamailioFront(c, files, tmp_path / "run").check())


def test_refer_and_notify_pass_inside_dialogs_only_when_the_profile_transfers_by_refer(
    tmp_path: Path,
) -> None:
    c = config()
    allow = AllowList.from_cidrs(["127.0.0.0/8"])
    passing = '!(has_totag() && is_method("REFER|NOTIFY"))'
    assert passing not in render_config(c, allow, None, Path("/d"), Path("/a"), secret="0" * 32)
    files = write_files(c, tmp_path, allow, None, [6001], refer=True)
    assert passing in files.cfg.read_text()
    assert asyncio.run(KamailioFront(c, files, tmp_path / "run").check()) is None


def test_the_front_is_on_for_every_worker_count_unless_switched_off() -> None:
    for count in ("1", "2"):
        assert uses_front(config(**{"worker.count": count}))
        assert uses_front(config(**{"worker.count": count, "sip.port": "0"}))  # any free
    assert not uses_front(config(**{"front.mode": "none", "worker.count": "1"}))
    with pytest.raises(ConfigError) as e:
        config(**{"front.mode": "haproxy"})
    assert e.value.key == "front.mode"
    with pytest.raises(ConfigError) as e:
        config(**{"front.kamailio": "/nonexistent/kamailio"})
    assert e.value.key == "front.mode" and "apt-get install kamailio" in str(e.value)


def test_behind_the_front_only_the_front_may_send() -> None:
    d = behind_front().decide(TWILIO_SOURCE, via_front(TWILIO_INVITE, TWILIO_SOURCE), 0, False)
    assert d.status == 403  # straight from the trunk, not through the front


def test_the_trunk_address_from_the_front_is_checked_and_recorded() -> None:
    ok = behind_front().decide(f"{FRONT}:5060", via_front(TWILIO_INVITE, TWILIO_SOURCE), 0, False)
    assert ok.status == 0
    assert ok.metadata["source"] == TWILIO_SOURCE
    stranger = behind_front().decide(f"{FRONT}:5060", via_front(TWILIO_INVITE, "6.6.6.6:5060"),
                                     0, False)
    assert stranger.status == 403


def test_the_trunk_transport_from_the_front_is_recorded() -> None:
    invite = via_front(TWILIO_INVITE, f"{TWILIO_SOURCE};transport=tcp")
    tcp = behind_front().decide(f"{FRONT}:5060", invite, 0, False)
    assert tcp.status == 0
    assert (tcp.metadata["source"], tcp.metadata["transport"]) == (TWILIO_SOURCE, "tcp")


@pytest.mark.parametrize("sources", [(), ("54.172.60.1:5060", "6.6.6.6:5060"), ("garbage",),
                                     ("54.172.60.1:5060;transport=carrier-pigeon",)])
def test_a_missing_doubled_or_garbled_source_header_is_refused(sources: tuple[str, ...]) -> None:
    d = behind_front().decide(f"{FRONT}:5060", via_front(TWILIO_INVITE, *sources), 0, False)
    assert d.status == 403


def test_without_a_front_the_header_is_ignored() -> None:
    plain = Admission(parse_profile(TWILIO_LIKE, env={}), 3, 30, b"k" * 32)
    forged = via_front(TWILIO_INVITE, "6.6.6.6:5060")
    d = plain.decide(TWILIO_SOURCE, forged, 0, False)
    assert d.status == 0
    assert "source" not in d.metadata


TLS = "udp,tcp,tls"


def test_with_tls_the_front_listens_on_the_tls_port_with_the_tls_module() -> None:
    c = config(**{"sip.transports": TLS, "sip.tls_port": "5071"})
    allow = AllowList.from_cidrs(["10.0.0.0/8"])
    text = render_config(c, allow, "203.0.113.7", Path("/d"), Path("/a"), secret="0" * 32,
                         tls_config=Path("/f/tls.cfg"))
    assert "enable_tls=yes" in text and "disable_tcp=no" in text
    assert 'loadmodule "tls.so"' in text
    assert 'modparam("tls", "config", "/f/tls.cfg")' in text
    assert "listen=tls:127.0.0.1:5071 advertise 203.0.113.7:5071" in text
    assert "listen=udp:127.0.0.1:5070 advertise 203.0.113.7:5070" in text
    plain = render_config(config(), allow, None, Path("/d"), Path("/a"), secret="0" * 32)
    assert "tls" not in plain
    with pytest.raises(ValueError):  # the module's file goes with the transport, and only
        render_config(c, allow, None, Path("/d"), Path("/a"), secret="0" * 32)
    with pytest.raises(ValueError):
        render_config(config(), allow, None, Path("/d"), Path("/a"), secret="0" * 32,
                      tls_config=Path("/f/tls.cfg"))


def test_the_tls_profiles_serve_the_certificate_asking_no_client_certificate() -> None:
    text = render_tls(TlsPair(Path("/t/front.crt"), Path("/t/front.key.pem"), True))
    server, client = text.split("[client:default]")
    assert "[server:default]" in server
    assert "method = TLSv1.2+" in server and "method = TLSv1.2+" in client
    assert "certificate = /t/front.crt" in server and "private_key = /t/front.key.pem" in server
    assert "require_certificate = no" in server
    assert "verify_certificate = no" in client


def test_with_tls_only_the_workers_are_still_reached_over_udp() -> None:
    c = config(**{"sip.transports": "tls", "sip.tls_port": "5071"})
    text = render_config(c, AllowList.from_cidrs(["10.0.0.0/8"]), "203.0.113.7", Path("/d"),
                         Path("/a"), secret="0" * 32, tls_config=Path("/f/tls.cfg"))
    listens = [line for line in text.splitlines() if line.startswith("listen=")]
    assert listens == ["listen=tls:127.0.0.1:5071 advertise 203.0.113.7:5071",
                       "listen=udp:127.0.0.1:5070"]  # loopback, never advertised
    assert ";transport=udp " in render_dispatcher(c, [6001])


@pytest.mark.parametrize("transports", [TLS, "tls"])
def test_kamailio_itself_accepts_the_generated_tls_configuration(tmp_path: Path,
                                                                 transports: str) -> None:
    c = config(**{"sip.transports": transports, "sip.tls_port": "5071"})
    pair = tls_pair(c, tmp_path / "tls", None)
    with pytest.raises(ValueError):
        write_files(c, tmp_path, AllowList.from_cidrs(["127.0.0.0/8"]), None, [6001])
    files = write_files(c, tmp_path, AllowList.from_cidrs(["127.0.0.0/8"]), None, [6001],
                        tls=pair)
    assert files.tls is not None
    assert asyncio.run(KamailioFront(c, files, tmp_path / "run").check()) is None
    assert files.tls.stat().st_mode & 0o777 == 0o600
    assert f"certificate = {pair.certificate}" in files.tls.read_text()
    front = KamailioFront(c, files, tmp_path / "run").public()
    assert front["sip"] == {t: f"127.0.0.1:{5071 if t == 'tls' else 5070}"
                            for t in transports.split(",")}
    # `kamailio -c` reads neither tls.cfg nor the certificate (a missing file passes): the
    # pair is checked before Kamailio starts (tests/unit/test_certs.py), the whole of it
    # by tests/integration/test_tls_srtp.py
