"""The real Azure Speech SDK against loopback endpoints: error mapping and restarts.

``SpeechConfig(endpoint="ws://127.0.0.1:PORT/...")`` points the SDK anywhere: with nothing
listening it cancels with ConnectionFailure (~1 s), and a server refusing the WebSocket
upgrade with 401 makes it cancel with AuthenticationFailure. The last test talks to the
real service and runs only when AZURE_SPEECH_KEY and AZURE_SPEECH_REGION are set.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest
from aiohttp import WSMsgType, web

from hitl_sip.errors import SpeechError
from hitl_sip.media.g711 import ulaw_decode, ulaw_encode
from hitl_sip.media.wav import read_wav, resample
from hitl_sip.speech.base import SpeechEvent, SpeechEventType, SttStream
from hitl_sip.speech.stt.azure_engine import AzureStt
from hitl_sip.speech.stt.fake import silence_frame, speech_frame
from hitl_sip.speech.stt.resilient import ResilientStream
from hitl_sip.testing.wer import word_error_rate
from tests.support.net import free_port

PATH = "/speech/recognition/conversation/cognitiveservices/v1"
START = SpeechEventType.START_OF_SPEECH
INTERIM = SpeechEventType.INTERIM
FINAL = SpeechEventType.FINAL
END = SpeechEventType.END_OF_SPEECH
SILENCE_8K = bytes(320)
ERROR_TIMEOUT = 15.0  # the SDK gives up on a refused connection after ~1 s


def _unreachable_endpoint() -> str:
    return f"ws://127.0.0.1:{free_port(socket.SOCK_STREAM)}{PATH}"


class CountingEngine:
    """Counts the streams a ResilientStream opens on the wrapped engine."""

    def __init__(self, engine: AzureStt) -> None:
        self.engine = engine
        self.name = engine.name
        self.opened = 0

    def stream(self, sample_rate: int, language: str = "en-US") -> SttStream:
        self.opened += 1
        return self.engine.stream(sample_rate, language)


@pytest.fixture
async def refusing_service() -> AsyncIterator[str]:
    """An endpoint that answers every WebSocket upgrade with 401 Unauthorized."""

    async def unauthorized(request: web.Request) -> web.Response:
        return web.Response(status=401, text="invalid subscription key")

    app = web.Application()
    app.router.add_get(PATH, unauthorized)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert runner.addresses
    try:
        yield f"ws://127.0.0.1:{runner.addresses[0][1]}{PATH}"
    finally:
        await runner.cleanup()


class FakeRecognitionService:
    """Speaks the Speech SDK's websocket protocol (USP) just enough for recognition.

    It reads the audio messages (a WAV header, then PCM) and finds "speech" the way
    FakeStt does: 20 ms frames whose peak reaches 1000 are voice. Like the service in
    continuous recognition it sends speech.startDetected once, at the first voice; every
    0.4 s of voice a speech.hypothesis with the first words of the phrase's scripted text;
    after 0.3 s of quiet a speech.phrase (Success with the text, or NoMatch when the script
    gives None). At the end of the audio it closes an open phrase, then sends
    speech.endDetected, speech.phrase EndOfDictation and turn.end (a speech.endDetected
    earlier would end the SDK's turn). Offsets are 100 ns ticks of received audio.
    """

    def __init__(self, script: list[str | None]) -> None:
        self.script = list(script)
        self.connections = 0
        self.url = ""
        self.sockets: set[web.WebSocketResponse] = set()

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("USP",))
        await ws.prepare(request)
        self.connections += 1
        self.sockets.add(ws)
        try:
            await self._serve(ws)
        finally:
            self.sockets.discard(ws)
        return ws

    async def _serve(self, ws: web.WebSocketResponse) -> None:
        state = _PhraseState()
        async for message in ws:
            if message.type != WSMsgType.BINARY:
                continue
            data = bytes(message.data)
            (head_size,) = struct.unpack(">H", data[:2])
            headers = dict(
                line.split(":", 1)
                for line in data[2 : 2 + head_size].decode().split("\r\n")
                if line
            )
            request_id = headers["X-RequestId"].strip()
            body = data[2 + head_size :]
            if body[:4] == b"RIFF":
                (state.rate,) = struct.unpack("<I", body[24:28])
                if state.turn == "":
                    state.turn = request_id
                    await self._send(ws, request_id, "turn.start", {"context": {"serviceTag": "t"}})
                continue
            if not body:  # the end of the audio
                if state.in_phrase:
                    await self._end_phrase(ws, request_id, state)
                if state.speech_started:
                    await self._send(ws, request_id, "speech.endDetected", {"Offset": state.ticks})
                # without EndOfDictation the SDK opens a new turn instead of ending
                end = {"RecognitionStatus": "EndOfDictation", "Offset": state.ticks, "Duration": 0}
                await self._send(ws, request_id, "speech.phrase", end)
                await self._send(ws, request_id, "turn.end", {})
                continue
            state.pending += body
            frame = state.rate * 2 // 50
            while len(state.pending) >= frame:
                chunk, state.pending = state.pending[:frame], state.pending[frame:]
                await self._frame(ws, request_id, state, chunk)

    async def _frame(
        self, ws: web.WebSocketResponse, request_id: str, state: _PhraseState, chunk: bytes
    ) -> None:
        samples = np.frombuffer(chunk, dtype="<i2").astype(np.int32)
        voiced = int(np.abs(samples).max()) >= 1000
        start, state.ticks = state.ticks, state.ticks + 200_000  # 20 ms
        if voiced:
            state.quiet = 0
            state.voice_end = state.ticks
            if not state.in_phrase:
                state.in_phrase, state.voice_start, state.next_hypothesis = True, start, start
                if not state.speech_started:
                    state.speech_started = True
                    await self._send(ws, request_id, "speech.startDetected", {"Offset": start})
            if state.ticks >= state.next_hypothesis + 4_000_000:
                state.next_hypothesis = state.ticks
                state.words += 1
                text = " ".join((self.script[0] or "").split()[: state.words])
                if text:
                    await self._send(
                        ws,
                        request_id,
                        "speech.hypothesis",
                        {
                            "Text": text,
                            "Offset": state.voice_start,
                            "Duration": state.ticks - state.voice_start,
                        },
                    )
        elif state.in_phrase:
            state.quiet += 1
            if state.quiet >= 15:
                await self._end_phrase(ws, request_id, state)

    async def _end_phrase(
        self, ws: web.WebSocketResponse, request_id: str, state: _PhraseState
    ) -> None:
        text = self.script.pop(0) if self.script else None
        timing = {"Offset": state.voice_start, "Duration": state.voice_end - state.voice_start}
        if text is None:
            await self._send(
                ws, request_id, "speech.phrase", {"RecognitionStatus": "NoMatch", **timing}
            )
        else:
            phrase = {"RecognitionStatus": "Success", "DisplayText": text, **timing}
            await self._send(ws, request_id, "speech.phrase", phrase)
        state.in_phrase, state.quiet, state.words = False, 0, 0

    @staticmethod
    async def _send(
        ws: web.WebSocketResponse, request_id: str, path: str, body: dict[str, object]
    ) -> None:
        head = f"X-RequestId:{request_id}\r\nContent-Type:application/json; charset=utf-8\r\n"
        await ws.send_str(f"{head}Path:{path}\r\n\r\n{json.dumps(body)}")


class _PhraseState:
    def __init__(self) -> None:
        self.rate = 8000
        self.turn = ""
        self.pending = b""
        self.ticks = 0
        self.in_phrase = False
        self.speech_started = False
        self.voice_start = 0
        self.voice_end = 0
        self.next_hypothesis = 0
        self.quiet = 0
        self.words = 0


@asynccontextmanager
async def _recognition_service(script: list[str | None]) -> AsyncIterator[FakeRecognitionService]:
    service = FakeRecognitionService(script)
    app = web.Application()
    app.router.add_get(PATH, service.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert runner.addresses
    service.url = f"ws://127.0.0.1:{runner.addresses[0][1]}{PATH}"
    try:
        yield service
    finally:
        for ws in list(service.sockets):  # the SDK keeps its connection open
            await ws.close()
        await runner.cleanup()


def _push(stream: SttStream, frame: bytes, seconds: float) -> None:
    for _ in range(round(seconds / 0.02)):
        stream.push_frame(frame)


async def _rest(stream: SttStream) -> list[SpeechEvent]:
    async def collect() -> list[SpeechEvent]:
        return [event async for event in stream]

    return await asyncio.wait_for(collect(), ERROR_TIMEOUT)


async def test_service_messages_become_start_interim_final_and_end_events() -> None:
    async with _recognition_service(["hello there agent"]) as service:
        stream = AzureStt(key="test-key", endpoint=service.url).stream(8000)
        try:
            _push(stream, silence_frame(8000), 0.5)
            _push(stream, speech_frame(8000), 1.0)
            _push(stream, silence_frame(8000), 0.5)
            stream.end_input()
            events = await _rest(stream)
        finally:
            await stream.aclose()
    kinds = [e.type for e in events]
    assert kinds[0] is START and kinds[-2:] == [FINAL, END]
    assert set(kinds[1:-2]) == {INTERIM}
    final = events[-2]
    assert final.text == "hello there agent"
    assert events[0].audio_time == pytest.approx(0.5)
    assert final.audio_time == pytest.approx(1.5)
    assert events[-1].audio_time == pytest.approx(1.5)


async def test_no_match_results_give_no_final() -> None:
    async with _recognition_service([None, "second phrase"]) as service:
        stream = AzureStt(key="test-key", endpoint=service.url).stream(16000)
        try:
            for _ in range(2):
                _push(stream, speech_frame(16000), 0.5)
                _push(stream, silence_frame(16000), 0.5)
            stream.end_input()
            events = await _rest(stream)
        finally:
            await stream.aclose()
    assert [e.text for e in events if e.type is FINAL] == ["second phrase"]
    assert [e.type for e in events if e.type is not INTERIM] == [START, END, START, FINAL, END]


async def test_flush_closes_the_open_phrase_and_audio_time_leaves_its_silence_out() -> None:
    async with _recognition_service(["first phrase here", "second phrase"]) as service:
        stream = AzureStt(key="test-key", endpoint=service.url).stream(8000)
        try:
            _push(stream, speech_frame(8000), 1.0)  # no quiet after it: the phrase stays open
            seen = [await asyncio.wait_for(anext(stream), ERROR_TIMEOUT)]
            while seen[-1].type is not INTERIM:
                seen.append(await asyncio.wait_for(anext(stream), ERROR_TIMEOUT))
            await stream.flush()
            while seen[-1].type is not END:
                seen.append(await asyncio.wait_for(anext(stream), ERROR_TIMEOUT))
            # caller audio goes on: 0.5 s quiet, 1 s voice, 0.5 s quiet (2.0 .. 3.0 s)
            _push(stream, silence_frame(8000), 0.5)
            _push(stream, speech_frame(8000), 1.0)
            _push(stream, silence_frame(8000), 0.5)
            stream.end_input()
            rest = await _rest(stream)
        finally:
            await stream.aclose()
    first = [e for e in seen if e.type is FINAL]
    second = [e for e in rest if e.type is FINAL]
    assert [e.text for e in first + second] == ["first phrase here", "second phrase"]
    assert first[0].audio_time == pytest.approx(1.0)
    # the service saw 0.8 s of flush silence more; the caller's clock does not
    assert second[0].audio_time == pytest.approx(2.5)
    assert next(e for e in rest if e.type is START).audio_time == pytest.approx(1.5)


async def _first_error(stream: SttStream) -> SpeechError:
    stream.push_frame(SILENCE_8K)
    with pytest.raises(SpeechError) as raised:
        await asyncio.wait_for(anext(aiter(stream)), ERROR_TIMEOUT)
    return raised.value


async def test_unreachable_service_raises_a_retryable_speech_error() -> None:
    stream = AzureStt(key="test-key", endpoint=_unreachable_endpoint()).stream(8000)
    try:
        error = await _first_error(stream)
    finally:
        await stream.aclose()
    assert error.retryable
    assert "ConnectionFailure" in str(error)


async def test_rejected_key_raises_a_non_retryable_speech_error(refusing_service: str) -> None:
    stream = AzureStt(key="wrong-key", endpoint=refusing_service).stream(8000)
    try:
        error = await _first_error(stream)
    finally:
        await stream.aclose()
    assert not error.retryable
    assert "AuthenticationFailure" in str(error)


async def test_resilient_stream_retries_an_unreachable_service_with_backoff() -> None:
    engine = CountingEngine(AzureStt(key="test-key", endpoint=_unreachable_endpoint()))
    restarts: list[SpeechError] = []
    stream = ResilientStream(
        engine,
        8000,
        on_restart=restarts.append,
        initial_backoff=0.05,
        max_backoff=0.1,
        max_restarts=2,
    )
    stream.push_frame(SILENCE_8K)
    with pytest.raises(SpeechError, match="giving up after 2 restarts") as raised:
        await asyncio.wait_for(anext(stream), 3 * ERROR_TIMEOUT)
    await stream.aclose()

    assert not raised.value.retryable
    assert engine.opened == 3
    assert len(restarts) == 2
    assert all(e.retryable and "ConnectionFailure" in str(e) for e in restarts)


async def test_resilient_stream_does_not_retry_a_rejected_key(refusing_service: str) -> None:
    engine = CountingEngine(AzureStt(key="wrong-key", endpoint=refusing_service))
    restarts: list[SpeechError] = []
    stream = ResilientStream(engine, 8000, on_restart=restarts.append)
    stream.push_frame(SILENCE_8K)
    with pytest.raises(SpeechError, match="AuthenticationFailure"):
        await asyncio.wait_for(anext(stream), ERROR_TIMEOUT)
    await stream.aclose()
    assert engine.opened == 1
    assert restarts == []


_KEY = os.environ.get("AZURE_SPEECH_KEY", "")
_REGION = os.environ.get("AZURE_SPEECH_REGION", "")
_CLIP = Path(
    "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0920.wav"
)
_REFERENCE = (
    "had he married a more amiable woman he might have been made still more respectable than he was"
)


def _telephone_clip() -> bytes:
    """The clip as an 8 kHz caller sends it (µ-law round trip), then 1 s of silence."""
    if not _CLIP.is_file():
        pytest.fail(f"{_CLIP} is missing: install the Debian package pocketsphinx-testdata")
    rate, pcm = read_wav(_CLIP)
    return ulaw_decode(ulaw_encode(resample(pcm, rate, 8000))) + bytes(8000 * 2)


@pytest.mark.skipif(
    not (_KEY and _REGION),
    reason="cloud credential: set AZURE_SPEECH_KEY and AZURE_SPEECH_REGION to run against Azure",
)
async def test_real_service_transcribes_a_telephone_quality_recording() -> None:
    call = _telephone_clip()
    stream = AzureStt(key=_KEY, region=_REGION).stream(8000)
    try:
        for at in range(0, len(call), 320):
            stream.push_frame(call[at : at + 320].ljust(320, b"\0"))
        stream.end_input()

        async def collect() -> list[SpeechEvent]:
            return [event async for event in stream]

        events = await asyncio.wait_for(collect(), 30)
    finally:
        await stream.aclose()
    text = " ".join(e.text for e in events if e.type is SpeechEventType.FINAL)
    assert word_error_rate(_REFERENCE, text) <= 0.2, text
