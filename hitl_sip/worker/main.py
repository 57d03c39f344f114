"""Entry point of a media-worker process.

The hub starts it with the resolved configuration as JSON in ``HITL_SIP_WORKER_CONFIG``, the
hub-link secret in ``HITL_SIP_WORKER_TOKEN`` and the digest-nonce secret shared by all its
workers, in hex, in ``HITL_SIP_WORKER_DIGEST_SECRET`` (without it, as when run by hand, the
worker draws its own and only its own nonces verify). Exit codes: 0 after a clean drain, 2 for a
bad configuration, 1 when the SIP stack cannot start (port in use, bad address).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import json
import logging
import os
import signal
import sys

from hitl_sip.bot.flow import FlowError
from hitl_sip.config import config_from_dict
from hitl_sip.errors import ConfigError, SipError
from hitl_sip.gctune import PauseMeter, tune
from hitl_sip.log import setup_logging
from hitl_sip.worker.service import WorkerService

log = logging.getLogger(__name__)


HUB_DIED = signal.SIGUSR1  # what PR_SET_PDEATHSIG sends this worker when the hub dies


async def run(service: WorkerService, watch_hub: bool = False) -> int:
    """Serve until SIGTERM/SIGINT (drain: live calls get ``worker.drain_grace``) or, with
    ``watch_hub``, the hub's death (:data:`HUB_DIED`: end the calls at once)."""
    stop = asyncio.Event()
    hub_died = False
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def on_hub_death() -> None:
        nonlocal hub_died
        hub_died = True
        stop.set()
    if watch_hub:
        loop.add_signal_handler(HUB_DIED, on_hub_death)
    pauses = PauseMeter(service.metrics.registry)
    pauses.install()
    try:
        await service.start()
    except SipError as e:
        log.error("%s", e)
        await service.drain_and_stop(0)
        return 1
    tune(f"worker {service.worker_id}")  # everything is loaded: the stack, the decoders
    await stop.wait()
    if hub_died:
        # nobody routes these calls any more, and the hub's successor needs this worker's
        # SIP port: end them now. What the hub has not acknowledged is kept for the next
        # worker with this id (hitl_sip.worker.hublink).
        log.warning("worker %s: the hub process died: ending %d live calls now",
                    service.worker_id, len(service.calls))
        await service.drain_and_stop(0, outcome="hub_lost")
        return 0
    log.info("worker %s stopping: draining live calls", service.worker_id)
    await service.drain_and_stop()
    log.info("worker %s stopped", service.worker_id)
    return 0


PR_SET_PDEATHSIG = 1


def drain_when_the_hub_dies() -> None:
    """Ask Linux for :data:`HUB_DIED` when the hub process dies, so that no orphan holds the
    SIP port. (Not SIGTERM: the hub sends that to drain, and a worker cannot tell the two
    apart by its parent pid — the signal comes while the dying hub's other threads still
    hold it.)"""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, HUB_DIED)
    except (OSError, AttributeError):
        log.warning("cannot watch the hub process; stop workers by hand if the hub dies")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hitl-sip-worker")
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--hub-url", default=None)
    parser.add_argument("--sip-port", type=int, default=None,
                        help="behind the SIP front: listen on front.worker_host:PORT")
    args = parser.parse_args(argv)
    # taken out of the environment so that no child of the worker (speech process) inherits it
    digest_hex = os.environ.pop("HITL_SIP_WORKER_DIGEST_SECRET", "")
    raw = os.environ.get("HITL_SIP_WORKER_CONFIG", "{}")
    try:
        config = config_from_dict(json.loads(raw))
    except (ConfigError, ValueError) as e:
        setup_logging("info", args.worker_id)
        log.error("bad worker configuration: %s", e)
        return 2
    setup_logging(config.log.level, args.worker_id)
    try:
        digest_secret = bytes.fromhex(digest_hex) or None
    except ValueError:
        log.error("bad HITL_SIP_WORKER_DIGEST_SECRET: expected hex")
        return 2
    # The media clock's callbacks, the event loop and the recognisers' threads share the
    # GIL: hand it over after 1 ms instead of 5 so a 20 ms frame never waits long for it.
    sys.setswitchinterval(0.001)
    if args.hub_url:
        drain_when_the_hub_dies()
    try:
        service = WorkerService(
            config,
            args.worker_id,
            index=args.index,
            hub_url=args.hub_url,
            hub_token=os.environ.get("HITL_SIP_WORKER_TOKEN", ""),
            sip_port=args.sip_port,
            digest_secret=digest_secret,
        )
    except (ConfigError, FlowError) as e:
        log.error("configuration error: %s", e)
        return 2
    return asyncio.run(run(service, watch_hub=bool(args.hub_url)))
