"""A softphone nobody here wrote (Debian's baresip) calls ``hitl-sip serve`` over loopback.

One 10 s call carries audio both ways: the server's greeting to the softphone, and the
softphone's microphone file (``agent_bill``) into the worker's recording. Both are checked
by correlation against the reference files after the G.711 round trip.

The reference is checked in half-second pieces rather than as one block: the worker's
adaptive jitter buffer (pjmedia) sometimes drops or inserts 10 ms while it settles, and a
single such step in the middle of an utterance costs a whole-utterance correlation up to
half its score (0.69 and 0.79 seen on loopback) although every word arrived. Each intact
piece still scores ~1.0 (unrelated speech: < 0.65), and the pieces must line up in time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hitl_sip.media.wav import read_wav, resample
from tests.support.audio import assert_contains, caller_channel
from tests.support.baresip import running_softphone
from tests.support.server import ROOT, running_server

pytestmark = pytest.mark.interop

GREETING = ROOT / "rtp/prompts/greeting.wav"
UTTERANCE = ROOT / "rtp/caller/agent_bill_8k.wav"
#: Longer than the 7.3 s greeting, so all of it reaches the softphone before it hangs up.
CALL_SECONDS = 10.0
#: The softphone starts talking while the greeting plays (barge-in is normal on a call).
SPEAK_AT = 1.0

@dataclass
class Call:
    record: dict[str, Any]
    server_recording: Path
    softphone_heard: Path
    softphone_log: str



@pytest.fixture(scope="module")
def call(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Call]:
    tmp = tmp_path_factory.mktemp("interop")
    with running_server(tmp) as server:
        dial = f"sip:+14155550123@127.0.0.1:{server.sip_port()}"
        with running_softphone(
            tmp, dial=dial, microphone=UTTERANCE, call_seconds=CALL_SECONDS, speak_at=SPEAK_AT
        ) as phone:
            try:
                server.wait_for(
                    lambda: len(server.call_records()) == 1,
                    timeout=CALL_SECONDS + 10,
                    what="the softphone's call to end",
                )
            except AssertionError as e:
                raise AssertionError(f"{e}\n--- baresip log ---\n{phone.log()}") from e
            phone.stop()  # baresip closes its sndfile recordings on the way out
            record = server.call_records()[0]
            yield Call(
                record=record,
                server_recording=server.data_dir / "recordings" / f"{record['callId']}.wav",
                softphone_heard=phone.received_wav(),
                softphone_log=phone.log(),
            )


def test_softphone_call_completes_on_pcmu_and_is_ended_by_the_caller(call: Call) -> None:
    assert call.record["outcome"] == "completed", call.softphone_log
    assert call.record["endedBy"] == "caller"
    assert call.record["codec"] == "PCMU"


def test_softphone_hears_the_whole_greeting_from_the_answer(call: Call) -> None:
    rate, heard = read_wav(call.softphone_heard)
    g_rate, greeting = read_wav(GREETING)
    greeting = resample(greeting, g_rate, rate)
    assert len(heard) >= len(greeting), (
        f"softphone received {len(heard) / 2 / rate:.1f} s, shorter than the greeting\n"
        f"{call.softphone_log}"
    )
    assert_contains(heard, greeting, rate, starts_within=(0.0, 1.0), what="greeting at softphone")


def test_server_records_what_the_softphone_said(call: Call) -> None:
    rate, recording = caller_channel(call.server_recording)
    u_rate, utterance = read_wav(UTTERANCE)
    assert_contains(
        recording,
        resample(utterance, u_rate, rate),
        rate,
        starts_within=(SPEAK_AT - 0.1, SPEAK_AT + 0.5),
        what="softphone audio in the worker's recording",
    )
