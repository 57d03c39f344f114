"""AzureTts with the real Speech SDK: local endpoints that refuse, drop or reject the
websocket, and the real service when credentials are provided."""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import struct
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import numpy as np
import pytest
from aiohttp import WSMsgType, web

from hitl_sip.errors import SpeechError
from hitl_sip.speech.base import TtsEngine
from hitl_sip.speech.tts.azure_engine import AzureTts, build_ssml
from hitl_sip.testing.analysis import rms_dbfs
from tests.support.net import free_port

pytest.importorskip(
    "azure.cognitiveservices.speech", reason="the Speech SDK is the optional [azure] extra"
)


def _endpoint(port: int) -> str:
    return f"ws://127.0.0.1:{port}/cognitiveservices/websocket/v1"


@asynccontextmanager
async def _websocket_stub(reply: str | None) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A server that reads the websocket upgrade request, then sends ``reply`` (an HTTP
    status line) or, with None, just closes the connection. Yields (port, requests)."""
    requests: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            requests.append(await reader.readuntil(b"\r\n\r\n"))
            if reply is not None:
                writer.write(
                    f"HTTP/1.1 {reply}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], requests
    finally:
        server.close()
        await server.wait_closed()


@dataclass
class _FakeSpeechService:
    """Speaks the Speech SDK's websocket protocol (USP) just enough for synthesis: answers
    each ``ssml`` message with turn.start, a 440 Hz tone (0.5 s) as audio messages, and
    turn.end. Records the output format and SSML of every request."""

    port: int = 0
    connections: int = 0
    requests: list[tuple[str, str]] = field(default_factory=list)
    open_sockets: set[web.WebSocketResponse] = field(default_factory=set)
    all_closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("USP",))
        await ws.prepare(request)
        self.connections += 1
        self.open_sockets.add(ws)
        self.all_closed.clear()
        try:
            await self._serve(ws)
        finally:
            self.open_sockets.discard(ws)
            if not self.open_sockets:
                self.all_closed.set()
        return ws

    async def _serve(self, ws: web.WebSocketResponse) -> None:
        output_format = ""
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            head, _, body = str(message.data).partition("\r\n\r\n")
            headers = {}
            for line in head.split("\r\n"):
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if headers.get("path") == "synthesis.context":
                output_format = json.loads(body)["synthesis"]["audio"]["outputFormat"]
            elif headers.get("path") == "ssml":
                self.requests.append((output_format, body))
                await self._speak(ws, headers["x-requestid"], output_format)

    async def _speak(self, ws: web.WebSocketResponse, request_id: str, output_format: str) -> None:
        rate = 8000 if "8khz" in output_format else 16000
        head = f"X-RequestId:{request_id}\r\nContent-Type:application/json; charset=utf-8\r\n"
        await ws.send_str(f"{head}Path:turn.start\r\n\r\n{{}}")
        t = np.arange(rate // 2) / rate
        pcm = np.round(8000 * np.sin(2 * math.pi * 440 * t)).astype("<i2").tobytes()
        audio_head = f"X-RequestId:{request_id}\r\nPath:audio\r\n".encode()
        for start in range(0, len(pcm), rate // 5):
            chunk = pcm[start : start + rate // 5]
            await ws.send_bytes(struct.pack(">H", len(audio_head)) + audio_head + chunk)
        await ws.send_str(f"{head}Path:turn.end\r\n\r\n")


@pytest.fixture
async def speech_service() -> AsyncIterator[_FakeSpeechService]:
    service = _FakeSpeechService()
    app = web.Application()
    app.router.add_get("/cognitiveservices/websocket/v1", service.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert runner.addresses
    service.port = int(runner.addresses[0][1])
    try:
        yield service
    finally:
        for ws in list(service.open_sockets):  # a failed test may leave clients connected
            await ws.close()
        await runner.cleanup()


@pytest.mark.parametrize(
    ("rate", "wire_format"),
    [(8000, "raw-8khz-16bit-mono-pcm"), (16000, "raw-16khz-16bit-mono-pcm")],
)
async def test_audio_arrives_as_raw_pcm_in_the_format_chosen_from_the_rate(
    speech_service: _FakeSpeechService, rate: int, wire_format: str
) -> None:
    engine = AzureTts(key="test-key", endpoint=_endpoint(speech_service.port))
    try:
        pcm = await engine.synthesize("Hello there.", rate)
    finally:
        await engine.aclose()
    assert len(pcm) == 2 * (rate // 2)  # the service's 0.5 s, no WAV header
    assert abs(rms_dbfs(pcm) - rms_dbfs(_tone(rate))) < 0.1
    assert [fmt for fmt, _ssml in speech_service.requests] == [wire_format]


def _tone(rate: int) -> bytes:
    t = np.arange(rate // 2) / rate
    return np.round(8000 * np.sin(2 * math.pi * 440 * t)).astype("<i2").tobytes()


async def test_text_is_sent_escaped_in_ssml_with_the_requested_voice(
    speech_service: _FakeSpeechService,
) -> None:
    engine = AzureTts(key="test-key", endpoint=_endpoint(speech_service.port))
    try:
        await engine.synthesize('Tom & "Jerry" <b>\n', 8000, voice="en-GB-SoniaNeural")
    finally:
        await engine.aclose()
    ((_fmt, ssml),) = speech_service.requests
    voice = ET.fromstring(ssml).find("{http://www.w3.org/2001/10/synthesis}voice")
    assert voice is not None
    assert voice.get("name") == "en-GB-SoniaNeural"
    assert voice.text == 'Tom & "Jerry" <b>'


async def test_sequential_requests_reuse_one_connection_and_concurrent_ones_are_bounded(
    speech_service: _FakeSpeechService,
) -> None:
    engine = AzureTts(key="test-key", endpoint=_endpoint(speech_service.port), max_concurrency=2)
    try:
        for text in ("one", "two", "three"):
            await engine.synthesize(text, 8000)
        assert speech_service.connections == 1
        results = await asyncio.gather(*(engine.synthesize(f"caller {i}", 8000) for i in range(6)))
    finally:
        await engine.aclose()
    assert all(len(pcm) == 8000 for pcm in results)
    assert speech_service.connections == 2  # the warm synthesizer plus one more, never six
    assert len(speech_service.requests) == 9


async def test_aclose_closes_the_pooled_connections(speech_service: _FakeSpeechService) -> None:
    engine = AzureTts(key="test-key", endpoint=_endpoint(speech_service.port))
    await asyncio.gather(engine.synthesize("one", 8000), engine.synthesize("two", 16000))
    assert len(speech_service.open_sockets) == 2
    await engine.aclose()
    await asyncio.wait_for(speech_service.all_closed.wait(), timeout=5)


async def test_nothing_listening_is_a_retryable_speech_error_within_seconds() -> None:
    engine = AzureTts(key="test-key", endpoint=_endpoint(free_port(socket.SOCK_STREAM)))
    assert isinstance(engine, TtsEngine)
    started = time.monotonic()
    with pytest.raises(SpeechError, match=r"ConnectionFailure") as e:
        await engine.synthesize("Hello there.", 8000)
    assert e.value.retryable
    assert time.monotonic() - started < 5.0
    await engine.aclose()


async def test_a_server_that_drops_the_connection_is_a_retryable_speech_error() -> None:
    async with _websocket_stub(None) as (port, requests):
        engine = AzureTts(key="test-key", endpoint=_endpoint(port))
        with pytest.raises(SpeechError, match=r"ConnectionFailure") as e:
            await engine.synthesize("Hello there.", 16000)
        assert e.value.retryable
        assert requests and requests[0].startswith(b"GET /cognitiveservices/websocket/v1")
        await engine.aclose()


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        ("401 Unauthorized", "AuthenticationFailure", False),
        ("403 Forbidden", "AuthenticationFailure", False),
        ("400 Bad Request", "BadRequest", False),
        ("429 Too Many Requests", "TooManyRequests", True),
        ("503 Service Unavailable", "ServiceUnavailable", True),
    ],
)
async def test_rejected_upgrade_maps_the_error_code_to_retryable(
    status: str, code: str, retryable: bool
) -> None:
    async with _websocket_stub(status) as (port, _requests):
        engine = AzureTts(key="test-key", endpoint=_endpoint(port))
        with pytest.raises(SpeechError, match=code) as e:
            await engine.synthesize("Hello there.", 8000)
        assert e.value.retryable is retryable
        await engine.aclose()


async def test_a_server_that_never_answers_times_out_as_retryable() -> None:
    accepted = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        accepted.set()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        engine = AzureTts(
            key="test-key", endpoint=_endpoint(server.sockets[0].getsockname()[1]), timeout=1.0
        )
        with pytest.raises(SpeechError, match="no result within 1 s") as e:
            await engine.synthesize("Hello there.", 8000)
        assert e.value.retryable
        assert accepted.is_set()
        await engine.aclose()
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_blank_text_gives_empty_pcm_without_contacting_the_service() -> None:
    async with _websocket_stub("500 Internal Server Error") as (port, requests):
        engine = AzureTts(key="test-key", endpoint=_endpoint(port))
        assert await engine.synthesize(" \n\t", 8000) == b""
        assert requests == []


async def test_unsupported_rate_and_overlong_text_are_value_errors() -> None:
    engine = AzureTts(key="test-key", region="westeurope", max_chars=10)
    with pytest.raises(ValueError, match="cannot produce 11025 Hz"):
        await engine.synthesize("hello", 11025)
    with pytest.raises(ValueError, match="11 characters long, the limit is 10"):
        await engine.synthesize("hello world", 8000)


def test_configuration_needs_key_and_region_or_an_endpoint() -> None:
    with pytest.raises(ValueError, match="key and region, or an endpoint"):
        AzureTts(key="k")
    assert "secret" not in repr(AzureTts(key="secret", region="westeurope"))


def test_ssml_escapes_the_text_and_takes_the_locale_from_the_voice() -> None:
    text = "Tom & Jerry said \"<speak>\" 'hi' </voice>"
    root = ET.fromstring(build_ssml(text, "de-DE-KatjaNeural"))
    assert root.get("{http://www.w3.org/XML/1998/namespace}lang") == "de-DE"
    voice = root.find("{http://www.w3.org/2001/10/synthesis}voice")
    assert voice is not None
    assert voice.get("name") == "de-DE-KatjaNeural"
    assert voice.text == text


_KEY = os.environ.get("AZURE_SPEECH_KEY")
_REGION = os.environ.get("AZURE_SPEECH_REGION")


@pytest.mark.skipif(
    not (_KEY and _REGION),
    reason="needs a cloud credential: set AZURE_SPEECH_KEY and AZURE_SPEECH_REGION",
)
@pytest.mark.parametrize("rate", [8000, 16000])
async def test_real_service_speaks_a_prompt_at_the_requested_rate(rate: int) -> None:
    engine = AzureTts(key=_KEY, region=_REGION)
    try:
        pcm = await engine.synthesize("Please hold while I connect you to an agent.", rate)
        again = await engine.synthesize("Thank you for calling.", rate)  # pooled synthesizer
    finally:
        await engine.aclose()
    assert 1.5 < len(pcm) / 2 / rate < 6.0
    assert len(again) > 0
    assert -40.0 < rms_dbfs(pcm) < -6.0
