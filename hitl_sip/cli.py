"""``hitl-sip`` command line (PROTOCOL.md §5).

Exit codes: 0 clean stop, 2 bad configuration (the offending key named), 1 anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import secrets
import signal
import ssl
import sys
from collections.abc import Callable
from typing import Any

from aiohttp import web

from hitl_sip.agents_cli import agents_command
from hitl_sip.bot.flow import FlowError
from hitl_sip.config import FLAG_KEYS, Config, load_config, uses_front, uses_rtpengine
from hitl_sip.errors import ConfigError
from hitl_sip.files import private_dir, private_umask
from hitl_sip.front.certs import TlsPair, host_names, pair_for, tls_pair
from hitl_sip.front.kamailio import (
    KamailioFront,
    free_sip_port,
    port_problem,
    trusted_sources,
    worker_ports,
    write_files,
)
from hitl_sip.front.rtpengine import RtpEngine, check_media_ranges, free_ng_port
from hitl_sip.front.rtpengine import write_config as write_rtpengine_config
from hitl_sip.gctune import PauseMeter, tune
from hitl_sip.hub.agents import AgentStore
from hitl_sip.hub.app import create_app, create_internal_app
from hitl_sip.hub.carrier import resolve_sip_uri
from hitl_sip.hub.carrier_control import CarrierControl
from hitl_sip.hub.core import Hub
from hitl_sip.hub.registry import WorkerRegistry
from hitl_sip.hub.sessions import Sessions
from hitl_sip.hub.supervisor import Supervisor, load_digest_secret
from hitl_sip.hub.threads import ThreadStore
from hitl_sip.hub.tokens import TokenSigner, load_or_create_secret
from hitl_sip.log import audit_to, setup_logging
from hitl_sip.sip.profile import load_profile
from hitl_sip.worker.engines import build_flow

log = logging.getLogger("hitl_sip")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hitl-sip", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the hub and its media workers")
    serve.add_argument("--config", help="TOML configuration file")
    serve.add_argument("--sip-host", help="address the SIP transports bind (sip.host)")
    serve.add_argument("--sip-port", help="SIP port; worker i uses port+i (sip.port)")
    serve.add_argument("--http-host", help="address of the HTTP API (http.host)")
    serve.add_argument("--http-port", help="port of the HTTP API (http.port)")
    serve.add_argument("--workers", help="media-worker processes (worker.count)")
    serve.add_argument("--max-calls", help="calls admitted per worker (worker.max_calls)")
    serve.add_argument("--data-dir", help="data directory (data_dir)")
    serve.add_argument("--profile", help="trunk profile name in sip_profiles/ or a file path")
    serve.add_argument("--log-level", help="debug, info, warning or error (log.level)")
    serve.add_argument("--flow", help='bot flow file, or "external" for the /bot namespace')
    serve.add_argument("--stt", help="speech-to-text engine: pocketsphinx or azure")
    serve.add_argument("--tts", help="text-to-speech engine: espeak or azure")
    serve.add_argument("--alive5-url", help="alive5's Socket.IO URL; alive5 is off without it "
                       "(alive5.url)")
    serve.add_argument("--alive5-api-key", help="alive5 API key (alive5.api_key); other local "
                       "users can read a command line: prefer HITL_SIP_ALIVE5_API_KEY")
    serve.add_argument("--alive5-channel-id", help="alive5 channel id (alive5.channel_id)")
    agents = sub.add_parser("agents", help="manage accounts: add NAME [--role ROLE] | list | "
                            "remove NAME | role NAME ROLE | passwd NAME")
    agents.add_argument("--config", help="TOML configuration file (for data_dir)")
    agents.add_argument("--data-dir", help="data directory (data_dir)")
    agents.add_argument("--role", help="add's role: agent (default), supervisor or admin")
    agents.add_argument("rest", nargs="*",
                        help="add NAME | list | remove NAME | role NAME ROLE | passwd NAME")
    return parser


async def _listen(runner: web.AppRunner, host: str, port: int,
                  ssl_context: ssl.SSLContext | None = None) -> tuple[str, int] | None:
    """Start ``runner`` on ``host:port``; the address it got, None when it cannot."""
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    try:
        await site.start()
    except OSError as e:
        log.error("cannot listen on %s:%s: %s", host, port, e)
        return None
    server = site._server  # aiohttp exposes the bound port nowhere else
    if isinstance(server, asyncio.Server) and server.sockets:
        bound = server.sockets[0].getsockname()[:2]
        return str(bound[0]), int(bound[1])
    return host, port


def https_context(pair: TlsPair) -> ssl.SSLContext:
    """The hub's HTTPS: TLS 1.2 or newer, the library's default ciphers."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(pair.certificate, pair.private_key)
    return context


async def serve(config: Config, token_secret: bytes, digest_secret: bytes,
                tls: TlsPair | None = None, https: TlsPair | None = None) -> int:
    """``tls``: the SIP front's certificate and key, when ``sip.transports`` has ``tls``;
    ``https``: the hub's, when ``http.tls`` is on."""
    registry = WorkerRegistry()
    token = secrets.token_urlsafe(32)
    data_dir = config.resolve_path(config.data_dir)
    store = ThreadStore(data_dir / "threads.sqlite")
    hub = Hub(config, registry, store)
    sessions = Sessions(AgentStore(data_dir / "agents.sqlite"),
                        TokenSigner(token_secret, ttl=config.api.token_ttl))
    app = create_app(config, registry, token, hub, sessions)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    internal_runner = web.AppRunner(create_internal_app(config, registry, token, hub),
                                    access_log=None, handle_signals=False)
    await runner.setup()
    await internal_runner.setup()
    public = await _listen(runner, config.http.host, config.http.port,
                           https_context(https) if https else None)
    internal = await _listen(internal_runner, config.http.internal_host,
                             config.http.internal_port)
    if public is None or internal is None:
        await runner.cleanup()
        await internal_runner.cleanup()
        return 1
    scheme = "https" if https else "http"
    log.info("hub listening on %s://%s:%s (dashboard, REST, Socket.IO)", scheme, *public)
    log.info("internal listener on http://%s:%s (metrics, healthz, workers)", *internal)
    host, port = internal
    worker_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    front: KamailioFront | None = None
    relay: RtpEngine | None = None
    worker_config, sip_ports = config, None
    if uses_front(config):
        profile = load_profile(config.sip.profile, config.resolve_path(config.profiles_dir))
        # the ports chosen here stay clear of the media ranges and the ephemeral range
        media = (range(profile.rtp.start, profile.rtp.end + 1),
                 range(config.front.worker_rtp_port_start, config.front.worker_rtp_port_end + 1))
        if not config.sip.port:  # 0: any free port, chosen now (Kamailio needs a number)
            config = dataclasses.replace(config, sip=dataclasses.replace(
                config.sip, port=free_sip_port(config.sip.host, media)))
            log.info("SIP front: sip.port 0, listening on free port %d", config.sip.port)
        if "tls" in config.sip.transports and not config.sip.tls_port:
            tls_port = config.sip.port
            while tls_port == config.sip.port:  # TCP and TLS cannot share one
                tls_port = free_sip_port(config.sip.host, media)
            config = dataclasses.replace(config, sip=dataclasses.replace(
                config.sip, tls_port=tls_port))
            log.info("SIP front: sip.tls_port 0, TLS on free port %d", config.sip.tls_port)
        problem = port_problem(config.sip.host, config.sip.port, config.sip.transports,
                               config.sip.tls_port)
        if problem:
            log.error("the SIP front cannot start: %s", problem)
            await runner.cleanup()
            return 1
        front_ports = (config.sip.port, config.sip.tls_port)
        sip_ports = worker_ports(config, media, taken=front_ports)
        worker_config = dataclasses.replace(config, front=dataclasses.replace(
            config.front, trusted=trusted_sources(config)))
        ng_port = None
        if uses_rtpengine(config):
            ng_port = free_ng_port(avoid=media, taken=(*front_ports, *sip_ports))
            conf = write_rtpengine_config(
                config, data_dir / "front", port_start=profile.rtp.start,
                port_end=profile.rtp.end, public_address=profile.public_address,
                ng_port=ng_port)
            relay = RtpEngine(config, conf, ng_port)
        files = write_files(config, data_dir / "front", profile.allow_list,
                            profile.public_address, sip_ports, tls=tls, rtpengine_ng=ng_port,
                            refer=profile.transfer.refer)
        front = KamailioFront(config, files, data_dir / "front" / "run")
        problem = await front.check()
        if problem:
            log.error("the generated Kamailio configuration (%s) does not load: %s",
                      files.cfg, problem)
            await runner.cleanup()
            return 1
        if relay is not None:
            problem = await relay.start()
            if problem:
                log.error("the media relay (rtpengine, %s) cannot start: %s", relay.conf_file,
                          problem)
                await runner.cleanup()
                return 1
    supervisor = Supervisor(worker_config, registry,
                            f"ws://{worker_host}:{port}/internal/worker", token,
                            sip_ports=sip_ports, on_exit=hub.worker_lost,
                            digest_secret=digest_secret)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await supervisor.start()
    if front is not None:
        await front.start()
        registry.front = _front_health(front, relay)
    await hub.start()
    PauseMeter(registry.metrics, "hitl_sip_hub_gc_pause_seconds").install()
    tune("hub")
    stop_wait = asyncio.create_task(stop.wait())
    fail_wait = asyncio.create_task(supervisor.failed.wait())
    await asyncio.wait({stop_wait, fail_wait}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if supervisor.failed.is_set():
        log.error("%s", supervisor.failure)
        code = 1
    else:
        log.info("stopping: no new calls, live calls get up to %.0fs", config.worker.drain_grace)
    for task in (stop_wait, fail_wait):
        task.cancel()
    registry.draining = True
    await supervisor.stop(config.worker.drain_grace)
    if front is not None:
        await front.stop()
    if relay is not None:
        await relay.stop()
    await hub.close()
    await runner.cleanup()
    await internal_runner.cleanup()
    store.close()
    log.info("stopped")
    return code


def _front_health(front: KamailioFront,
                  relay: RtpEngine | None) -> Callable[[], dict[str, Any]]:
    """/healthz's ``front``: Kamailio's state, with rtpengine's under ``media``."""
    def public() -> dict[str, Any]:
        state: dict[str, Any] = dict(front.public())
        state["media"] = relay.public() if relay is not None else {"kind": "direct"}
        return state
    return public


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    private_umask()  # recordings, call records, databases, keys: 0600 in 0700 directories
    if args.command == "serve":
        overrides = {key: getattr(args, flag) for flag, key in FLAG_KEYS.items()}
        try:
            config = load_config(args.config, overrides=overrides)
            profile = load_profile(config.sip.profile, config.resolve_path(config.profiles_dir))
            check_media_ranges(config, profile)
            config = resolve_sip_uri(config, profile)  # the carriers' webhooks dial it
            CarrierControl.from_config(config)  # the Vonage key, read and checked now
            build_flow(config)
            data_dir = private_dir(config.resolve_path(config.data_dir))
            tls = None
            if uses_front(config) and "tls" in config.sip.transports:
                # the configured pair, checked, or a self-signed one made now
                tls = tls_pair(config, data_dir / "front" / "tls", profile.public_address)
            https = None
            if config.http.tls:  # the configured pair, checked, or a self-signed one
                https = pair_for(config, "http", config.http.tls_certificate,
                                 config.http.tls_private_key,
                                 directory=data_dir / "http" / "tls",
                                 names=host_names(config.http.host), what="hub HTTPS")
            token_secret = load_or_create_secret(data_dir / "token.key")
            digest_secret = load_digest_secret(config)
        except ConfigError as e:
            print(f"hitl-sip: configuration error: {e}", file=sys.stderr)
            return 2
        except FlowError as e:
            print(f"hitl-sip: configuration error: bot.flow: {e}", file=sys.stderr)
            return 2
        setup_logging(config.log.level, "hub")
        audit_to(data_dir / "audit.log")
        return asyncio.run(serve(config, token_secret, digest_secret, tls, https))
    if args.command == "agents":
        try:
            config = load_config(args.config, overrides={"data_dir": args.data_dir})
        except ConfigError as e:
            print(f"hitl-sip: configuration error: {e}", file=sys.stderr)
            return 2
        setup_logging(config.log.level, "agents")
        data_dir = config.resolve_path(config.data_dir)
        if args.rest and args.rest[0] in ("add", "remove", "role", "passwd"):
            audit_to(private_dir(data_dir) / "audit.log")
        return agents_command(args.rest, data_dir, sys.stdin, sys.stdout, sys.stderr,
                              role=args.role)
    return 1  # pragma: no cover - argparse enforces the sub-command


if __name__ == "__main__":
    raise SystemExit(main())
