"""The SIP edge as an outsider and as the trunk meet it: a running ``hitl-sip serve`` with
the Kamailio front before one worker, then two, and a trunk profile that allows 127.0.0.1 only, so a
client bound to another loopback address (127.0.0.2, 127.0.0.3) is a stranger.

* a Route header never makes the front relay to a target of the sender's choosing, outside
  a dialog or inside a real one;
* SUBSCRIBE, MESSAGE, REGISTER are refused from anywhere (405 to the trunk, 403 to a
  stranger) and nothing is ever sent back but that answer (no NOTIFY);
* a stranger's OPTIONS is not answered 200;
* the trunk's own INVITE burst (40/s for 5 s) gets an answer for every INVITE (200, or 503
  with Retry-After) while its OPTIONS keepalives are answered throughout, each within 1 s of
  its only transmission;
* a stranger's flood (2,000 OPTIONS at 400/s) is cut off by pike while the trunk's call
  keeps its audio and a new trunk call is answered;
* a worker reached directly (only the front should) answers neither SUBSCRIBE nor MESSAGE,
  inside a dialog or out of one, with anything but 403.
"""

from __future__ import annotations

import itertools
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.net import free_port
from tests.support.rtpcaller import RtpCaller
from tests.support.server import Server, running_server, trunk_profile
from tests.support.sipp import SIPP, run_sipp
from tests.support.sipwire import Exchange, Request, SipWire

STRANGER = "127.0.0.2"
FLOODER = "127.0.0.3"  # its own address: pike blocks it for a while after its flood


@pytest.fixture(scope="module", params=[1, 2], ids=["1-worker", "2-workers"])
def srv(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest,
        ) -> Iterator[Server]:
    """The same edge whatever the number of workers (the front is always there)."""
    workers = int(request.param)
    home = tmp_path_factory.mktemp(f"edge-{workers}")
    extra: dict[str, dict[str, Any]] = {
        "front": {"mode": "kamailio", "probe_interval": 1, "pike_window": 2,
                  "pike_density": 20, "trunk_rate": 20},
    }
    with running_server(home, workers=workers, sip={"port": free_port(), "profile": "lab"},
                        worker={"max_calls": 2}, extra=extra,
                        profiles={"lab": trunk_profile()}) as server:
        server.wait_for(lambda: server.health()[1].get("front", {}).get("running"), 15,
                        what="the SIP front running")
        yield server


def front_port(srv: Server) -> int:
    return int(srv.health()[1]["front"]["sip"]["udp"].rsplit(":", 1)[1])


class Listener:
    """A UDP socket on loopback that must never receive anything."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])

    def received(self, within: float) -> list[bytes]:
        """What arrived within ``within`` seconds (a bounded wait for what must not come)."""
        got = []
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                got.append(self.sock.recv(65535))
            except TimeoutError:
                break
        return got

    def close(self) -> None:
        self.sock.close()


def answer(wire: SipWire, request: Request, limit: float = 3.0) -> Exchange:
    return wire.final_answer(request, limit)


def final_status(wire: SipWire, request: Request) -> int:
    result = answer(wire, request)
    final = result.final
    assert final is not None, result.describe()
    assert not result.requests, f"the front sent requests back: {result.requests!r}"
    return final.status


@pytest.mark.parametrize("source", ["127.0.0.1", STRANGER])
@pytest.mark.parametrize("method", ["OPTIONS", "INFO", "MESSAGE", "INVITE", "BYE"])
def test_a_route_header_outside_a_dialog_never_relays(srv: Server, source: str,
                                                      method: str) -> None:
    foreign = Listener()
    port = front_port(srv)
    try:
        with SipWire(port, local_host=source) as wire:
            route = f"<sip:127.0.0.1:{port};lr>, <sip:127.0.0.1:{foreign.port};lr>"
            request = (wire.invite(to_tag="t0", headers=[("Route", route)])
                       if method == "INVITE" else
                       wire.request(method, to_tag="t0", headers=[("Route", route)]))
            status = final_status(wire, request)
        expected = {403} if source == STRANGER else {403, 405, 481}
        assert status in expected, status
        assert foreign.received(0.5) == []
    finally:
        foreign.close()


def test_inside_a_real_dialog_a_route_to_a_foreign_target_is_refused(srv: Server) -> None:
    foreign = Listener()
    try:
        with RtpCaller(front_port(srv)) as caller:
            caller.call(10)
            caller.start_media()
            routes = list(caller._routes)  # the front's Record-Route, with its token
            assert routes and ";hs=" in routes[0][1], routes
            # the trunk itself (same socket, same dialog) tries to reach beyond the front
            request = caller._wire.request(
                "INFO", uri=str(caller._target), call_id=caller._invite.call_id,  # type: ignore[union-attr]
                cseq=5, from_tag=caller._invite.from_tag,  # type: ignore[union-attr]
                to_tag=caller._remote_tag,
                headers=[*routes, ("Route", f"<sip:127.0.0.1:{foreign.port};lr>")])
            with SipWire(front_port(srv)) as other:
                # same Call-ID and tags from a stranger's socket: not ours either
                stranger = SipWire(front_port(srv), local_host=STRANGER)
                try:
                    spoof = stranger.request(
                        "INFO", uri=str(caller._target),
                        call_id=caller._invite.call_id,  # type: ignore[union-attr]
                        cseq=6, from_tag=caller._invite.from_tag,  # type: ignore[union-attr]
                        to_tag=caller._remote_tag,
                        headers=[*routes, ("Route", f"<sip:127.0.0.1:{foreign.port};lr>")])
                    assert final_status(stranger, spoof) == 403
                finally:
                    stranger.close()
                relayed = answer(other, request)
            final = relayed.final
            assert final is not None and final.status == 403, relayed.describe()
            assert foreign.received(0.5) == []
            # the call itself is untouched: its own BYE still goes through
            caller.hangup()
            assert caller.ended_at is not None
    finally:
        foreign.close()
    assert "to a foreign target refused" in srv.log()


@pytest.mark.parametrize("method", ["SUBSCRIBE", "MESSAGE", "REGISTER", "PUBLISH", "REFER"])
def test_methods_the_server_has_no_use_for_are_refused_from_anywhere(
    srv: Server, method: str,
) -> None:
    port = front_port(srv)
    headers = [("Event", "presence"), ("Expires", "600")] if method == "SUBSCRIBE" else []
    with SipWire(port) as trunk:
        result = answer(trunk, trunk.request(method, headers=headers))
        assert result.final is not None and result.final.status == 405, result.describe()
        allow = result.final.header("Allow") or ""
        assert "INVITE" in allow and method not in allow
        assert not result.requests  # no NOTIFY, nothing
    with SipWire(port, local_host=STRANGER) as stranger:
        result = answer(stranger, stranger.request(method, headers=headers))
        assert result.final is not None and result.final.status == 403, result.describe()
        assert result.final.header("Allow") is None
        assert not result.requests


def test_options_is_answered_200_to_the_trunk_only(srv: Server) -> None:
    port = front_port(srv)
    with SipWire(port) as trunk:
        assert final_status(trunk, trunk.request("OPTIONS")) == 200
    with SipWire(port, local_host=STRANGER) as stranger:
        assert final_status(stranger, stranger.request("OPTIONS")) == 403


def sipp_stats(path: Path, *more: str) -> dict[str, int]:
    """The cumulative counts of SIPp's last -trace_stat line: successful and failed calls,
    and the columns named in ``more``."""
    lines = path.read_text().splitlines()
    header, last = lines[0].split(";"), lines[-1].split(";")
    return {name: int(last[header.index(name)])
            for name in ("SuccessfulCall(C)", "FailedCall(C)", *more)}


#: SIPp's response-time buckets (ms) of the keepalive's "answer" timer (options_keepalive.xml)
KEEPALIVE_BUCKETS = ("<10", "<20", "<50", "<100", "<200", "<500", "<1000", ">=1000")


def test_a_trunk_invite_burst_is_answered_and_its_keepalives_go_on(
    srv: Server, tmp_path: Path,
) -> None:
    port = front_port(srv)
    # one OPTIONS every 0.5 s throughout the burst, each sent once (-nr) and failed unless
    # its 200 comes within 1 s: a keepalive answered only after a retransmission fails
    keepalive_stats = tmp_path / "keepalive.csv"
    keepalive = run_sipp("options_keepalive", port, tmp_path, calls=12, limit=1, rate=2,
                         timeout=30, background=True,
                         extra=["-nr", "-trace_stat", "-stf", str(keepalive_stats), "-fd", "1"])
    assert isinstance(keepalive, subprocess.Popen)
    stats = tmp_path / "burst.csv"
    burst = subprocess.run(
        [SIPP, f"127.0.0.1:{port}", "-sf", str(Path(__file__).parents[1] / "sipp" /
                                               "invite_burst.xml"),
         "-i", "127.0.0.1", "-p", str(free_port()), "-t", "u1", "-s", "+14155550123",
         "-r", "40", "-m", "200", "-l", "200", "-timeout", "40s", "-nostdin", "-nd",
         "-trace_stat", "-stf", str(stats), "-fd", "1", "-mi", "127.0.0.1",
         "-mp", str(free_port())],
        capture_output=True, text=True, timeout=60, check=False)
    out, _ = keepalive.communicate(timeout=40)
    counts = sipp_stats(stats)
    assert counts == {"SuccessfulCall(C)": 200, "FailedCall(C)": 0}, burst.stdout[-3000:]
    assert keepalive.returncode == 0, out[-2000:]
    buckets = [f"ResponseTimeRepartitionanswer_{b}" for b in KEEPALIVE_BUCKETS]
    pings = sipp_stats(keepalive_stats, *buckets)
    assert pings["SuccessfulCall(C)"] == 12 and pings["FailedCall(C)"] == 0, pings
    assert sum(pings[b] for b in buckets) == 12 and pings[buckets[-1]] == 0, pings
    assert "flood from 127.0.0.1" not in srv.log()


def test_a_strangers_flood_is_cut_off_while_the_trunk_goes_on(
    srv: Server, tmp_path: Path,
) -> None:
    port = front_port(srv)
    with RtpCaller(port) as caller:
        caller.call(10)
        caller.start_media()
        start = time.monotonic()
        flood = subprocess.run(
            [SIPP, f"127.0.0.1:{port}", "-sf",
             str(Path(__file__).parents[1] / "sipp" / "options_flood.xml"),
             "-i", FLOODER, "-p", str(free_port(host=FLOODER)), "-t", "u1",
             "-r", "400", "-m", "2000", "-l", "2000", "-timeout", "25s",
             "-nostdin", "-nd", "-trace_stat", "-stf", str(tmp_path / "flood.csv"),
             "-fd", "1"],
            capture_output=True, text=True, timeout=60, check=False)
        elapsed = time.monotonic() - start
        counts = sipp_stats(tmp_path / "flood.csv")
        # a stranger is never answered 200; the front stops answering it at all
        assert counts["SuccessfulCall(C)"] == 0, flood.stdout[-2000:]
        assert f"flood from {FLOODER}" in srv.log()
        rx = [p.arrival for p in list(caller.received) if p.arrival >= start]
        assert len(rx) >= 0.95 * elapsed / 0.02, (len(rx), elapsed)
        gaps = [b - a for a, b in itertools.pairwise(rx)]
        assert max(gaps) < 0.06, max(gaps)
        # a new trunk call is answered right away
        with RtpCaller(port) as second:
            try:
                second.call(5)
            except (RuntimeError, TimeoutError) as e:  # why, from the front's own lines
                front = [line for line in srv.log().splitlines() if "front:" in line]
                pytest.fail(f"{e}\nthe front said:\n" + "\n".join(front[-15:]))
            second.hangup()
        caller.hangup()


def test_a_worker_itself_refuses_subscriptions_and_sends_no_notify(srv: Server) -> None:
    """Behind the front only the front reaches a worker; should anything else on the host
    try, the worker has no presence to offer (pjsua would accept and NOTIFY any Contact)."""
    with SipWire(srv.worker_sip_port()) as wire:
        request = wire.request("SUBSCRIBE", headers=[("Event", "presence"),
                                                     ("Expires", "600")])
        result = answer(wire, request)
        assert result.final is not None and result.final.status == 403, result.describe()
        later = Exchange()
        while wire.receive(time.monotonic() + 1.0, later) is not None:  # a NOTIFY would come now
            pass
        assert later.requests == []


def test_a_worker_itself_refuses_messages_in_a_dialog_and_out_of_one(srv: Server) -> None:
    """pjsua answers any MESSAGE 200 (its IM module out of a dialog, its call code in one),
    with no setting to turn it off; the worker's own pjsip module answers 403 first. The
    front never passes a MESSAGE on (405); this is what anything else on the host gets."""
    worker = srv.worker_sip_port()
    with SipWire(worker) as wire:
        request = wire.request("MESSAGE", body=b"hello", content_type="text/plain")
        result = answer(wire, request)
        assert result.final is not None and result.final.status == 403, result.describe()
        assert not result.requests
    # inside a real dialog: the trunk's call through the front, then a MESSAGE straight to
    # the worker that took it with that dialog's Call-ID and tags
    health = srv.health()[1]
    ports = [int(w["sip"]["udp"].rsplit(":", 1)[1]) for w in health["workers"]]
    with RtpCaller(front_port(srv)) as caller:
        caller.call(10)
        invite = caller._invite
        assert invite is not None
        statuses = []
        for port in ports:  # the one that has the dialog answers like the others
            with SipWire(port) as wire:
                request = wire.request(
                    "MESSAGE", uri=str(caller._target), call_id=invite.call_id, cseq=7,
                    from_tag=invite.from_tag, to_tag=caller._remote_tag, body=b"hello",
                    content_type="text/plain")
                result = answer(wire, request)
                assert result.final is not None, result.describe()
                assert not result.requests
                statuses.append(result.final.status)
        caller.hangup()
        assert caller.ended_at is not None
    assert statuses == [403] * len(ports), statuses
