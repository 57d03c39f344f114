"""rtpengine's control protocol, *ng*: a bencoded dictionary in one UDP datagram, prefixed
by a cookie the reply echoes (``<cookie> <bencode>``). Only what the front needs: ``ping``
for the health check, and offer/answer/delete for the tests and benchmarks that drive
rtpengine without Kamailio.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import Any

Bencodable = bytes | str | int | list[Any] | dict[str, Any]


def bencode(value: Bencodable) -> bytes:
    """Bencode a str/bytes/int/list/dict (keys sorted, as the format wants)."""
    if isinstance(value, bool):
        raise ValueError("bencode has no booleans")
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        items = sorted((k.encode(), v) for k, v in value.items())
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"
    raise ValueError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes) -> Any:
    """Decode one bencoded value (strings come back as ``str`` when they are UTF-8)."""
    value, end = _decode(data, 0)
    if end != len(data):
        raise ValueError(f"trailing data at offset {end}")
    return value


def _decode(data: bytes, at: int) -> tuple[Any, int]:
    if at >= len(data):
        raise ValueError("truncated bencode")
    head = data[at:at + 1]
    if head == b"i":
        end = data.index(b"e", at)
        return int(data[at + 1:end]), end + 1
    if head in (b"l", b"d"):
        items: list[Any] = []
        at += 1
        while data[at:at + 1] != b"e":
            if at >= len(data):
                raise ValueError("truncated bencode")
            item, at = _decode(data, at)
            items.append(item)
        if head == b"l":
            return items, at + 1
        if len(items) % 2:
            raise ValueError("dictionary with a key and no value")
        return {str(k): v for k, v in zip(items[::2], items[1::2], strict=True)}, at + 1
    if head.isdigit():
        colon = data.index(b":", at)
        size = int(data[at:colon])
        raw = data[colon + 1:colon + 1 + size]
        if len(raw) != size:
            raise ValueError("truncated bencode string")
        try:
            return raw.decode(), colon + 1 + size
        except UnicodeDecodeError:
            return raw, colon + 1 + size
    raise ValueError(f"unexpected byte {head!r} at offset {at}")


class _Reply(asyncio.DatagramProtocol):
    def __init__(self, cookie: bytes) -> None:
        self.cookie = cookie
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        cookie, _, body = data.partition(b" ")
        if cookie == self.cookie and not self.answer.done():
            self.answer.set_result(body)

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


async def ng_request(host: str, port: int, command: dict[str, Any],
                     wait: float = 2.0) -> dict[str, Any]:
    """Send one ng command, return rtpengine's reply dictionary. Raises ``TimeoutError``
    without an answer in ``wait`` seconds, ``OSError`` when the port is closed,
    ``ValueError`` on a reply that is not a bencoded dictionary."""
    cookie = secrets.token_hex(8).encode()
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: _Reply(cookie), remote_addr=(host, port))
    try:
        transport.sendto(cookie + b" " + bencode(command))
        body = await asyncio.wait_for(protocol.answer, wait)
    finally:
        transport.close()
        with contextlib.suppress(BaseException):
            protocol.answer.cancel()
    reply = bdecode(body)
    if not isinstance(reply, dict):
        raise ValueError("the ng reply is not a dictionary")
    return reply


async def ping(host: str, port: int, wait: float = 2.0) -> bool:
    """True when rtpengine answers ``ping`` with ``pong``."""
    try:
        reply = await ng_request(host, port, {"command": "ping"}, wait)
    except (OSError, TimeoutError, ValueError):
        return False
    return reply.get("result") == "pong"
