"""Kamailio as the SIP front of the media workers, its configuration generated from the
trunk profile and ``[front]``.

The script follows the layout of Kamailio's stock ``kamailio.cfg``. For every request:

1. ``X-Hitl-Source`` is removed, whatever the sender put there;
2. REQINIT: ``maxfwd`` and ``sanity`` (malformed requests are dropped and logged); the
   source is a *trunk* when the profile's allow-list has it (every source, without an
   allow-list); ``pike`` blocks a non-trunk address sending more than
   ``front.pike_density`` requests per ``front.pike_window`` seconds (dropped silently until
   it calms down) — a trunk is never cut off by its own burst; methods other than
   INVITE/ACK/BYE/CANCEL/OPTIONS/INFO/UPDATE/PRACK get 405 with ``Allow`` (a stranger gets
   403, whatever it sends) — but for REFER and NOTIFY inside a dialog when the trunk profile
   says ``[transfer] refer = true`` (a worker's transfer to a phone number, and the trunk's
   NOTIFYs of its progress; a REFER *to* a worker is declined there);
3. WITHINDLG: an in-dialog request is routed only in a dialog this front created: its first
   Route is this front and carries the dialog's token (``hs``: a hash of the Call-ID under
   the front's key, ``<data_dir>/front/front.key``, so dialogs survive a restart of the
   front); coming from the trunk's side its next hop must be one of the workers, never a
   target a Route header names (403); the ``dialog`` module tracks the dialogs (a request
   for one it does not know, from before a restart, is logged). Anything else: 481 to a
   trunk or a worker, 403 to a stranger;
4. SOURCE: an initial request from outside the allow-list gets 403 (OPTIONS included: no
   200 to strangers); INVITEs from the trunks beyond ``front.trunk_rate`` per second get 503
   with ``Retry-After`` (``pipelimit``);
5. OPTIONS from a trunk (its keepalive) are answered 200 by the front;
6. DISPATCH: ``X-Hitl-Source: ip:port`` is added, the dialog is record-routed with its token
   and tracked, and ``dispatcher`` algorithm 10 (call-load distribution) picks the
   least-loaded worker, each capped at ``worker.max_calls``; workers are probed with
   OPTIONS every ``front.probe_interval`` s and skipped while they do not answer; a worker's
   503 or silence tries the next; when every worker is full or down the trunk gets 503 with
   ``Retry-After`` so it fails over.

The workers accept requests only from the front's addresses (``front.trusted``). The
generated files are private (0600, in a 0700 directory): the script holds the token key.

SIP over TLS (``tls`` in ``sip.transports``) ends at the front: it listens on
``sip.tls_port`` with the certificate of :mod:`hitl_sip.front.certs` (``tls.cfg``: TLS 1.2
or newer, no client certificate asked) and reaches the workers over UDP on loopback like
every other request; ``X-Hitl-Source`` says ``transport=tls``. SRTP is the workers' business
(the trunk profile's ``[rtp] srtp``).

MEDIA (``front.media = "rtpengine"``, the default): every SDP crosses rtpengine
(:mod:`hitl_sip.front.rtpengine`, its ng port given as ``rtpengine_ng``): an INVITE's offer
(``direction=external direction=internal``: from the trunk toward the workers) and the
workers' 18x/2xx answers are rewritten to rtpengine's addresses with ``strict-source`` (RTP
or RTCP from any address but the one the SDP names is dropped), ``replace-origin``,
``replace-session-connection`` and ``ICE=remove``; an offer in a worker's 2xx (an INVITE
without SDP) is answered by the ACK; re-INVITEs and UPDATEs with SDP in the dialog are
offers again; BYE, CANCEL and a failed initial INVITE delete the call's session. When
rtpengine does not answer an offer the trunk gets 503 with ``Retry-After``: media never
goes around it (the workers' media listens on ``front.worker_host`` only).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import platform
import secrets
import signal
import socket
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from hitl_sip.config import Config, worker_transports
from hitl_sip.front.certs import TlsPair
from hitl_sip.front.ports import internal_port
from hitl_sip.front.process import kill_group, stop_group
from hitl_sip.sip.acl import AllowList

log = logging.getLogger(__name__)

SOURCE_HEADER = "X-Hitl-Source"
SET_ID = 1
ALLOW_GROUP = 1


PR_SET_PDEATHSIG = 1


def _die_with_the_hub() -> None:  # pragma: no cover - runs in the child before exec
    """SIGTERM to Kamailio's main process when the hub dies (it then stops its children),
    so a killed hub leaves no front holding the SIP port."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def modules_dir(config: Config) -> str:
    if config.front.modules_dir:
        return config.front.modules_dir
    arch = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}.get(
        platform.machine(), f"{platform.machine()}-linux-gnu")
    return f"/usr/lib/{arch}/kamailio/modules"


def port_problem(host: str, port: int, transports: tuple[str, ...],
                 tls_port: int = 0) -> str | None:
    """Why the front could not listen on ``host:port`` (and ``tls_port`` for TLS), e.g.
    another server has it; None when it can. Kamailio itself would only exit, again and
    again."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for transport in transports:
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        where = tls_port if transport == "tls" else port
        if not where:
            continue
        with socket.socket(family, kind) as probe:
            if transport != "udp":
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, where))
            except OSError as e:
                return f"{transport} {host}:{where}: {e.strerror}"
    return None


def free_sip_port(host: str, avoid: Iterable[range] = ()) -> int:
    """A port free for both UDP and TCP on ``host`` (``sip.port = 0`` with the front),
    outside the ephemeral range (:mod:`hitl_sip.front.ports`)."""
    return internal_port(host, avoid=avoid)


def worker_ports(config: Config, avoid: Iterable[range] = (),
                 taken: Collection[int] = ()) -> list[int]:
    """The internal SIP port of each worker behind the front: ``front.worker_base_port + i``,
    or free ports outside the ephemeral range, ``avoid`` (the media ranges) and ``taken``
    (the front's own), which no socket opened meanwhile can take before the worker binds it."""
    f, count = config.front, config.worker.count
    if f.worker_base_port:
        return [f.worker_base_port + i for i in range(count)]
    ports: list[int] = []
    for _ in range(count):
        ports.append(internal_port(f.worker_host, avoid=avoid, taken=[*taken, *ports]))
    return ports


def trusted_sources(config: Config) -> tuple[str, ...]:
    """Addresses a worker accepts the front's requests from."""
    hosts = {config.front.worker_host}
    if config.sip.host not in ("0.0.0.0", "::", ""):
        hosts.add(config.sip.host)
    return tuple(sorted(hosts))


def render_dispatcher(config: Config, ports: list[int]) -> str:
    transport = "udp" if "udp" in worker_transports(config) else "tcp"
    lines = ["# setid destination flags priority attributes (generated by hitl-sip)"]
    for i, port in enumerate(ports):
        lines.append(f"{SET_ID} sip:{config.front.worker_host}:{port};transport={transport} 0 0 "
                     f"duid=w{i + 1};maxload={config.worker.max_calls}")
    return "\n".join(lines) + "\n"


def render_addresses(allow: AllowList) -> str:
    """permissions' address file: ``group ip mask port`` per allowed network."""
    lines = ["# group ip mask port (generated from the trunk profile's [allow])"]
    for network in allow.networks:
        lines.append(f"{ALLOW_GROUP} {network.network_address} {network.prefixlen} 0")
    return "\n".join(lines) + "\n"


def _listen_lines(config: Config, public: str | None) -> str:
    out = []
    for transport in config.sip.transports:
        port = config.sip.tls_port if transport == "tls" else config.sip.port
        line = f"listen={transport}:{config.sip.host}:{port}"
        if public:
            line += f" advertise {public}:{port}"
        out.append(line)
    if not {"udp", "tcp"} & set(config.sip.transports):
        # TLS only toward the trunks: the workers are still reached over UDP, from here
        out.append("# the workers' leg only (the trunks reach this front over TLS)")
        out.append(f"listen=udp:{config.front.worker_host}:{config.sip.port}")
    return "\n".join(out)


def render_tls(pair: TlsPair) -> str:
    """The tls module's profiles: as a server, the front's certificate, TLS 1.2 or newer and
    no client certificate (carriers are identified by their address, like over UDP); as a
    client (a BYE to a trunk whose connection closed) no verification of the trunk's."""
    return f"""# TLS profiles of the hitl-sip SIP front (generated at every start)
[server:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
certificate = {pair.certificate}
private_key = {pair.private_key}

[client:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
"""


def _tls_lines(tls_config: Path | None) -> tuple[str, str]:
    """The core settings and module lines of SIP over TLS; empty without ``tls_config``."""
    if tls_config is None:
        return "", ""
    core = """
enable_tls=yes
# a trunk's TLS connection stays open for its calls' BYEs (Kamailio's stock value)
tcp_connection_lifetime=3605"""
    module = f"""
loadmodule "tls.so"
modparam("tls", "config", "{tls_config}")"""
    return core, module


ALLOWED_METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "UPDATE", "PRACK")
TOKEN_PARAM = "hs"  # the Record-Route parameter that proves the front created a dialog


# rtpengine's flags (ng protocol) for every offer and answer of a call
MEDIA_FLAGS = "strict-source replace-origin replace-session-connection ICE=remove DTLS=off"
# an initial offer from a trunk: received on the public side, sent on the workers' side
OFFER_IN = "direction=external direction=internal " + MEDIA_FLAGS
# an initial offer from a worker (in its 2xx to an INVITE that had no SDP)
OFFER_OUT = "direction=internal direction=external " + MEDIA_FLAGS
FLAG_SDP = 7  # transaction flag: the INVITE carried an offer
# An RTP/SAVP offer without an SDES key stays without one (rtpengine would add its own):
# the worker refuses it (406) as it would without the relay. With keys, rtpengine passes the
# offered key on and terminates SRTP on each side with the keys each side chose.
KEYLESS_SAVP = """
        $var(sdes) = "";
        if (search_body("RTP/SAVP") && !search_body("a=crypto:")) {
            $var(sdes) = " SDES-off";
        }"""


@dataclass(frozen=True)
class _Media:
    """The script's pieces for rtpengine; all empty with direct media."""

    module: str = ""
    cancel: str = ""
    offer: str = ""
    indialog: str = ""
    reply: str = ""
    failed: str = ""


def _media(config: Config, ng_port: int | None) -> _Media:
    if ng_port is None:
        return _Media()
    retry = config.worker.retry_after
    return _Media(
        module=f"""
loadmodule "rtpengine.so"
modparam("rtpengine", "rtpengine_sock", "udp:127.0.0.1:{ng_port}")
# a restarted rtpengine is used again within seconds; a dead one blocks a process ~1 s
modparam("rtpengine", "rtpengine_disable_tout", 2)
modparam("rtpengine", "rtpengine_tout_ms", 500)
modparam("rtpengine", "rtpengine_retr", 1)""",
        cancel="""
            rtpengine_delete();""",
        offer=f"""
    if (has_body("application/sdp")) {{
        setflag({FLAG_SDP});{KEYLESS_SAVP}
        if (!rtpengine_offer("{OFFER_IN}$var(sdes)")) {{
            xlog("L_ERR", "front: the media relay did not take the offer: 503 to $si\n");
            ds_load_unset();
            append_to_reply("Retry-After: {retry}\r\n");
            send_reply("503", "Service Unavailable");
            exit;
        }}
    }}""",
        indialog=f"""
    if (is_method("BYE")) {{
        rtpengine_delete();
    }} else if (is_method("INVITE|UPDATE") && has_body("application/sdp")) {{{KEYLESS_SAVP}
        if (!rtpengine_offer("{MEDIA_FLAGS}$var(sdes)")) {{
            append_to_reply("Retry-After: {retry}\r\n");
            send_reply("503", "Service Unavailable");
            exit;
        }}
        t_on_reply("MEDIAREPLY");
    }} else if (is_method("ACK") && has_body("application/sdp")) {{
        rtpengine_answer("{MEDIA_FLAGS}");
    }}""",
        reply=f"""
    if (is_method("INVITE") && status =~ "(18[0-9]|2[0-9][0-9])" && has_body("application/sdp")) {{
        if (isflagset({FLAG_SDP})) {{
            rtpengine_answer("{MEDIA_FLAGS}");
        }} else {{
            rtpengine_offer("{OFFER_OUT}");
        }}
    }}""",
        failed="""
    rtpengine_delete();""",
    )


def render_config(config: Config, allow: AllowList, public_address: str | None,
                  dispatcher_file: Path, address_file: Path, *, secret: str,
                  tls_config: Path | None = None, rtpengine_ng: int | None = None,
                  refer: bool = False) -> str:
    """The Kamailio script (module docstring). ``secret``: hex, the key of the dialog
    tokens in this front's Record-Route (the file is written 0600). ``tls_config``: the tls
    module's file (:func:`render_tls`), required when ``sip.transports`` has ``tls``.
    ``rtpengine_ng``: rtpengine's ng port on 127.0.0.1, with ``front.media = rtpengine``.
    ``refer``: the trunk profile's ``[transfer] refer`` (REFER and NOTIFY pass in dialogs)."""
    if ("tls" in config.sip.transports) != (tls_config is not None):
        raise ValueError("tls_config goes with 'tls' in sip.transports, and only with it")
    tls_core, tls_module = _tls_lines(tls_config)
    media = _media(config, rtpengine_ng)
    f = config.front
    level = {"debug": 3, "info": 2, "warning": 1, "error": -1}.get(config.log.level, 2)
    methods = "|".join(ALLOWED_METHODS)
    # a transfer by REFER: the REFER and the trunk's NOTIFYs exist only inside a dialog
    in_dialog = ' && !(has_totag() && is_method("REFER|NOTIFY"))' if refer else ""
    if allow.allow_any:
        # no allow-list: every source may call, and every one is flood-limited
        trunk_check = """
    $var(trunk) = 1;"""
        stranger_pike = f"""
    if (!ds_is_from_list("{SET_ID}") && !pike_check_req()) {{
        xlog("L_ALERT", "front: flood from $si: $rm dropped\\n");
        exit;
    }}"""
        trunk_rate = ""
    else:
        trunk_check = f"""
    $var(trunk) = 0;
    if (allow_source_address("{ALLOW_GROUP}")) {{
        $var(trunk) = 1;
    }}"""
        # strangers only: a trunk is never cut off by its own burst (it gets 503s instead)
        stranger_pike = f"""
    if ($var(trunk) == 0 && !ds_is_from_list("{SET_ID}") && !pike_check_req()) {{
        xlog("L_ALERT", "front: flood from $si: $rm dropped\\n");
        exit;
    }}"""
        trunk_rate = f"""
    if (is_method("INVITE") && pl_check("trunk", "TAILDROP", {f.trunk_rate}) < 0) {{
        xlog("L_WARN", "front: more than {f.trunk_rate} INVITEs/s from the trunks: 503\\n");
        pl_drop("{config.worker.retry_after}");
        exit;
    }}"""
    tcp = "no" if {"tcp", "tls"} & set(config.sip.transports) else "yes"
    return f"""#!KAMAILIO
# The hitl-sip SIP front, generated from the trunk profile {config.sip.profile!r} and [front]
# at every start: edit those, not this file. It holds a secret: keep it private (0600).
# The layout follows Kamailio's stock kamailio.cfg: REQINIT (sanity, methods, floods),
# WITHINDLG, the source checks, then dispatching to the media workers.

debug={level}
log_stderror=yes
log_prefix="front "
hdr_name_extra_chars="!%*'`"
children={f.children}
tcp_children=2
disable_tcp={tcp}
auto_aliases=no
server_signature=no
user_agent_header="User-Agent: hitl-sip front"
server_header="Server: hitl-sip front"{tls_core}
{_listen_lines(config, public_address)}

mpath="{modules_dir(config)}/"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "sanity.so"
loadmodule "pike.so"
loadmodule "pipelimit.so"
loadmodule "permissions.so"
loadmodule "dispatcher.so"
loadmodule "dialog.so"{tls_module}{media.module}

modparam("tm", "fr_timer", 2000)
modparam("tm", "fr_inv_timer", 120000)
modparam("rr", "enable_full_lr", 1)
modparam("rr", "append_fromtag", 1)
modparam("sanity", "autodrop", 0)
modparam("pike", "sampling_time_unit", {f.pike_window})
modparam("pike", "reqs_density_per_unit", {f.pike_density})
modparam("pike", "remove_latency", {f.pike_window * 2})
modparam("pipelimit", "timer_interval", 1)
modparam("permissions", "address_file", "{address_file}")
modparam("dispatcher", "list_file", "{dispatcher_file}")
modparam("dispatcher", "flags", 2)
modparam("dispatcher", "ds_hash_size", 9)
modparam("dispatcher", "ds_hash_expire", {int(config.worker.max_call_seconds) + 60})
modparam("dispatcher", "ds_hash_initexpire", 120)
modparam("dispatcher", "ds_ping_method", "OPTIONS")
modparam("dispatcher", "ds_ping_from", "sip:front@hitl-sip.invalid")
modparam("dispatcher", "ds_ping_interval", {f.probe_interval})
modparam("dispatcher", "ds_probing_mode", 1)
# a worker is taken for down after 3 unanswered probes in a row (one lost OPTIONS on a
# loaded host must not turn calls away); an INVITE it does not answer marks it at once
modparam("dispatcher", "ds_probing_threshold", 3)
modparam("dispatcher", "ds_inactive_threshold", 1)
modparam("dispatcher", "ds_ping_reply_codes", "class=2;class=4")
modparam("dialog", "default_timeout", {int(config.worker.max_call_seconds) + 60})
modparam("dialog", "enable_stats", 1)

request_route {{
    # whatever a client sent as our source header is gone, on every path
    remove_hf("{SOURCE_HEADER}");
    route(REQINIT);
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{{media.cancel}
            route(RELAY);
        }}
        exit;
    }}
    if (has_totag()) {{
        route(WITHINDLG);
        exit;
    }}
    if (is_method("ACK")) {{
        # the ACK of a negative final answer: part of a transaction we relayed, or nothing
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    # a retransmission of a request in progress is absorbed here
    t_check_trans();
    route(SOURCE);
    if (!is_method("INVITE|OPTIONS")) {{
        # BYE, INFO, UPDATE, PRACK only exist inside a dialog
        sl_send_reply("481", "Call/Transaction Does Not Exist");
        exit;
    }}
    if (is_method("OPTIONS")) {{
        # a trunk's keepalive: the front answers for the workers; as a UAS here it
        # supports no extension a Require could name (RFC 3261 8.2.2.3)
        if (is_present_hf("Require")) {{
            append_to_reply("Unsupported: $hdr(Require)\r\n");
            send_reply("420", "Bad Extension");
            exit;
        }}
        sl_send_reply("200", "OK");
        exit;
    }}
    route(INVITE_CHECKS);
    route(DISPATCH);
}}

route[INVITE_CHECKS] {{
    # RFC 3261 20.10: a Contact URI with ',', ';' or '?' is enclosed in <>; without them
    # the rest is not the URI's, and a worker would drop the INVITE unanswered
    if (is_present_hf("Contact") && $hdr(Contact) =~ "^[^<\\"]*[?]") {{
        sl_send_reply("400", "Bad Contact");
        exit;
    }}
    # RFC 3261 21.4.7: the answer carries an SDP; an Accept without it cannot be met
    if (is_present_hf("Accept")
            && !($(hdr(Accept){{s.tolower}}) =~ "application/sdp|application/[*]|[*]/[*]")) {{
        append_to_reply("Accept: application/sdp\r\n");
        sl_send_reply("406", "Not Acceptable");
        exit;
    }}
}}

route[REQINIT] {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    # 18407: the checks of 17895 plus Proxy-Require (420 for an extension the front lacks);
    # URIs parsed: Request-URI, From, To and Contact (15)
    if (!sanity_check("18407", "15")) {{
        xlog("L_WARN", "front: malformed $rm from $si dropped\n");
        exit;
    }}{trunk_check}{stranger_pike}
    if (!is_method("{methods}"){in_dialog}) {{
        if ($var(trunk) == 1) {{
            append_to_reply("Allow: {", ".join(ALLOWED_METHODS)}\r\n");
            send_reply("405", "Method Not Allowed");
        }} else {{
            sl_send_reply("403", "Forbidden");
        }}
        exit;
    }}
}}

route[SOURCE] {{
    if ($var(trunk) == 0) {{
        xlog("L_WARN", "front: $rm from $si refused: not in the trunk allow-list\n");
        sl_send_reply("403", "Forbidden");
        exit;
    }}{trunk_rate}
}}

route[DISPATCH] {{
    append_hf("{SOURCE_HEADER}: $si:$sp;transport=$pr\r\n");
    # the dialog's token: only dialogs this front created (before a restart too) are
    # routed later
    $var(m) = "{secret}:" + $ci + ":{secret}";
    add_rr_param(";{TOKEN_PARAM}=$(var(m){{s.sha256}}{{s.substr,0,32}})");
    record_route();
    dlg_manage();
    if (!ds_select_dst("{SET_ID}", "10")) {{
        route(ALLFULL);
    }}{media.offer}
    t_on_failure("NEXTWORKER");
    t_on_reply("WORKERREPLY");
    route(RELAY);
}}

route[RELAY] {{
    if (!t_relay()) {{
        sl_reply_error();
    }}
    exit;
}}

route[WITHINDLG] {{
    # only a dialog this front created: its first Route is this front, with the token
    $var(ours) = 0;
    if ($route_uri != $null && is_myself("$route_uri")) {{
        $var(m) = "{secret}:" + $ci + ":{secret}";
        if ($(route_uri{{uri.param,{TOKEN_PARAM}}}) == $(var(m){{s.sha256}}{{s.substr,0,32}})) {{
            $var(ours) = 1;
        }}
    }}
    if ($var(ours) == 0) {{
        if (is_method("ACK") && t_check_trans()) {{
            t_relay();
            exit;
        }}
        if ($var(trunk) == 1 || ds_is_from_list("{SET_ID}")) {{
            sl_send_reply("481", "Call/Transaction Does Not Exist");
        }} else {{
            xlog("L_WARN", "front: in-dialog $rm from $si refused: not a dialog of ours\n");
            sl_send_reply("403", "Forbidden");
        }}
        exit;
    }}
    if (!is_known_dlg()) {{
        xlog("L_INFO", "front: $rm for a dialog from before this front started\n");
    }}
    if (!loose_route()) {{
        sl_send_reply("404", "Not here");
        exit;
    }}
    if (!ds_is_from_list("{SET_ID}")) {{
        # from the trunk's side: the next hop must be one of our workers, never a target
        # a Route header names
        if ($du != $null) {{
            $var(next) = $du;
        }} else {{
            $var(next) = $ru;
        }}
        if (!ds_is_from_list("{SET_ID}", "2", "$var(next)")) {{
            xlog("L_WARN", "front: in-dialog $rm from $si to a foreign target refused\n");
            sl_send_reply("403", "Forbidden");
            exit;
        }}
    }}
    if (is_method("BYE")) {{
        ds_load_update();
    }}{media.indialog}
    route(RELAY);
}}

event_route[dispatcher:dst-down] {{
    xlog("L_WARN", "front: worker $ru stopped answering probes: no calls sent to it\n");
}}

event_route[dispatcher:dst-up] {{
    xlog("L_WARN", "front: worker $ru answers probes again\n");
}}

route[ALLFULL] {{
    xlog("L_WARN", "front: every worker is full or down: 503 to $si\n");
    append_to_reply("Retry-After: {config.worker.retry_after}\r\n");
    send_reply("503", "Service Unavailable");
    exit;
}}

reply_route {{
    # a response that belongs to none of the front's transactions goes nowhere: forwarded
    # to its next Via it would let anyone make the edge send packets to any address
    if (!t_check_trans()) {{
        drop;
    }}
}}

onreply_route[WORKERREPLY] {{
    if (is_method("INVITE") && status =~ "2[0-9][0-9]") {{
        ds_load_update();
    }}{media.reply}
}}{_media_reply_route(media)}

failure_route[NEXTWORKER] {{
    if (t_is_canceled()) {{
        ds_load_unset();{media.failed}
        exit;
    }}
    # a final reply the worker sent (401, 403, 488...) goes to the trunk as it is, even when
    # it overtook the worker's 100 Trying (another Kamailio process may handle that one)
    if (t_check_status("503") || t_branch_timeout() || $T(reply_type) == 1) {{
        if (t_branch_timeout() && !t_branch_replied()) {{
            ds_mark_dst("ip");
        }}
        # ds_next_dst moves this call's load to the next worker: the entry must still exist
        if (ds_next_dst()) {{
            t_on_failure("NEXTWORKER");
            t_on_reply("WORKERREPLY");
            t_relay();
            exit;
        }}
        ds_load_unset();{media.failed}
        route(ALLFULL);
    }}
    ds_load_unset();{media.failed}
}}
"""


def _media_reply_route(media: _Media) -> str:
    """The replies to an in-dialog offer (re-INVITE, UPDATE): their SDP is the answer."""
    if not media.reply:
        return ""
    return f"""

onreply_route[MEDIAREPLY] {{
    if (status =~ "(18[0-9]|2[0-9][0-9])" && has_body("application/sdp")) {{
        rtpengine_answer("{MEDIA_FLAGS}");
    }}
}}"""


@dataclass
class FrontFiles:
    cfg: Path
    dispatcher: Path
    addresses: Path
    tls: Path | None = None  # the tls module's profiles, with SIP over TLS


def front_secret(directory: Path) -> str:
    """The key of the front's dialog tokens: ``<directory>/front.key`` (0600), made once,
    so that dialogs survive a restart of the front or of the hub."""
    path = directory / "front.key"
    try:
        text = path.read_text().strip()
        if len(text) == 32 and all(c in "0123456789abcdef" for c in text):
            return text
    except FileNotFoundError:
        pass
    key = secrets.token_hex(16)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    return key


def _private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(path, 0o600)


def write_files(config: Config, directory: Path, allow: AllowList, public_address: str | None,
                ports: list[int], *, tls: TlsPair | None = None,
                rtpengine_ng: int | None = None, refer: bool = False) -> FrontFiles:
    """``tls``: the certificate and key (:func:`hitl_sip.front.certs.tls_pair`), required
    when ``sip.transports`` has ``tls``. ``rtpengine_ng``: rtpengine's ng port, with
    rtpengine on the media path. ``refer``: the trunk profile's ``[transfer] refer``."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    files = FrontFiles(directory / "kamailio.cfg", directory / "dispatcher.list",
                       directory / "address.list")
    if "tls" in config.sip.transports:
        if tls is None:
            raise ValueError("sip.transports has tls: the front needs a certificate and key")
        files.tls = directory / "tls.cfg"
        _private(files.tls, render_tls(tls))
    _private(files.dispatcher, render_dispatcher(config, ports))
    _private(files.addresses, render_addresses(allow))
    _private(files.cfg, render_config(config, allow, public_address, files.dispatcher,
                                      files.addresses, secret=front_secret(directory),
                                      tls_config=files.tls, rtpengine_ng=rtpengine_ng,
                                      refer=refer))
    return files


class KamailioFront:
    """Runs Kamailio in the foreground as a child of the hub, restarting it if it dies."""

    def __init__(self, config: Config, files: FrontFiles, run_dir: Path) -> None:
        self.config = config
        self.files = files
        self.run_dir = run_dir
        self.process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.restarts = 0

    async def check(self) -> str | None:
        """``kamailio -c``: None when the configuration parses, else Kamailio's complaint."""
        proc = await asyncio.create_subprocess_exec(
            self.config.front.kamailio, "-c", "-f", str(self.files.cfg),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        if proc.returncode == 0:
            return None
        lines = [ln for ln in out.decode(errors="replace").splitlines() if "ERROR" in ln]
        return "\n".join(lines[-5:]) or f"kamailio -c exited with {proc.returncode}"

    async def _spawn(self) -> asyncio.subprocess.Process:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        return await asyncio.create_subprocess_exec(
            self.config.front.kamailio, "-DD", "-E", "-f", str(self.files.cfg),
            "-P", str(self.run_dir / "kamailio.pid"), "-Y", str(self.run_dir),
            "-m", "64", "-M", "8",
            start_new_session=True,
            preexec_fn=_die_with_the_hub,  # only prctl: no locks touched in the child
        )

    def public(self) -> dict[str, object]:
        """What /healthz shows of the front."""
        sip = self.config.sip
        running = self.process is not None and self.process.returncode is None
        return {"kind": "kamailio", "running": running,
                "pid": self.process.pid if self.process else 0, "restarts": self.restarts,
                "sip": {t: f"{sip.host}:{sip.tls_port if t == 'tls' else sip.port}"
                        for t in sip.transports}}

    async def start(self) -> None:
        self.process = await self._spawn()
        log.info("SIP front (kamailio pid %d) listening on %s:%s for %d workers",
                 self.process.pid, self.config.sip.host, self.config.sip.port,
                 self.config.worker.count)
        self._task = asyncio.create_task(self._keep(), name="kamailio")

    async def _keep(self) -> None:
        backoff = 1.0
        while not self._stopping and self.process is not None:
            code = await self.process.wait()
            if self._stopping:
                return
            # Kamailio's children outlive a killed main process and keep the SIP sockets:
            # end the whole group (its own session) before starting again
            kill_group(self.process.pid, signal.SIGKILL)
            log.error("the SIP front (kamailio) exited with code %s: restarting in %.0fs",
                      code, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
            self.restarts += 1
            self.process = await self._spawn()

    async def stop(self) -> None:
        self._stopping = True
        if self.process is not None:
            await stop_group(self.process, "the SIP front")
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
