#!/usr/bin/env python3
"""Regenerate the rtp/ media corpus (WAV prompts, caller speech, hold music, RTP pcaps).

Run from anywhere, e.g. ``python rtp/generate.py`` at the repository root. Speech comes
from espeak-ng with the fixed settings in rtp/corpus.toml; everything else (resampling,
levels, G.711, RTP, pcap framing, music) is done in numpy by ``hitl_sip.media`` with
fixed SSRCs, sequence numbers, timestamps and capture times, so a rerun produces
byte-identical files (for a given espeak-ng version). Files whose bytes did not change
are left untouched. ``--check`` writes nothing and exits 1 if any file would change.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hitl_sip.media.g711 import alaw_encode, ulaw_encode  # noqa: E402
from hitl_sip.media.rtp import DTMF_EVENTS  # noqa: E402
from hitl_sip.media.wav import frames, read_wav, resample, write_wav  # noqa: E402
from hitl_sip.testing.pcap import dtmf_event_packets, rtp_stream_packets, write_udp_pcap  # noqa: E402

CORPUS = ROOT / "rtp"

PROMPT_RATE = 16000
MUSIC_RATE = 16000
TELEPHONE_RATE = 8000
SAMPLES_PER_FRAME = 160  # 20 ms at 8 kHz

TARGET_RMS_DBFS = -20.0
PEAK_LIMIT_DBFS = -1.0
CALLER_LEAD_SECONDS = 0.3  # the caller starts talking a moment after the media starts
CALLER_TAIL_SECONDS = 0.7  # trailing silence lets an endpointer close the utterance

# Fixed RTP identity of the synthetic caller (one SSRC for audio and telephone-event,
# as a real trunk sends) and a fixed capture time, so every pcap is reproducible.
CALLER_SSRC = 0x0CA11E55
AUDIO_START_SEQ = 20000
AUDIO_START_TS = 3_200_000
DTMF_START_SEQ = 30000
DTMF_TIMESTAMP = 4_800_000
PCAP_EPOCH = 1_700_000_000.0
PCAP_SRC = ("10.0.0.1", 40000)
PCAP_DST = ("10.0.0.2", 6000)

DTMF_DIGITS = "0123456789*#"
NOMARKER_DIGITS = "015"
DIGIT_NAMES = {"*": "star", "#": "hash"}


@dataclass
class Entry:
    """One generated file, for the README table."""

    path: Path
    description: str
    seconds: float
    size: int


def _pcm_array(pcm: bytes) -> npt.NDArray[np.float64]:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def _to_pcm(samples: npt.NDArray[np.float64]) -> bytes:
    return np.clip(np.round(samples), -32768, 32767).astype("<i2").tobytes()


def normalize(pcm: bytes, rate: int) -> bytes:
    """Scale to the target RMS level (peaks under the limit), with 5 ms fades at the ends."""
    samples = _pcm_array(pcm)
    fade = min(round(0.005 * rate), len(samples) // 2)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade, endpoint=False)
        samples[:fade] *= ramp
        samples[-fade:] *= ramp[::-1]
    rms = float(np.sqrt(np.mean(samples * samples)))
    peak = float(np.max(np.abs(samples)))
    if rms == 0.0:
        return pcm
    gain = 32768.0 * 10 ** (TARGET_RMS_DBFS / 20) / rms
    gain = min(gain, 32768.0 * 10 ** (PEAK_LIMIT_DBFS / 20) / peak)
    return _to_pcm(samples * gain)


def synthesize(text: str, voice: dict[str, object]) -> tuple[int, bytes]:
    """Speak ``text`` with espeak-ng; returns (rate, mono s16le PCM)."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise SystemExit("espeak-ng is not installed (apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speech.wav"
        subprocess.run(
            [
                espeak,
                "-v",
                str(voice["name"]),
                "-s",
                str(voice["words_per_minute"]),
                "-p",
                str(voice["pitch"]),
                "-w",
                str(out),
                text,
            ],
            check=True,
            capture_output=True,
        )
        return read_wav(out)


def silence(seconds: float, rate: int) -> bytes:
    return bytes(2 * round(seconds * rate))


def hold_music(rate: int) -> bytes:
    """About 10 s of soft electric-piano-like chords (Cmaj7, Am7, Fmaj7, G6) that loop."""
    chords = [
        [48, 60, 64, 67, 71],
        [45, 57, 60, 64, 67],
        [41, 57, 60, 64, 65],
        [43, 55, 59, 62, 64],
    ]
    chord_seconds = 2.5
    release_seconds = 0.6
    total = round(chord_seconds * len(chords) * rate)
    out = np.zeros(total)
    note_length = round((chord_seconds + release_seconds) * rate)
    t = np.arange(note_length) / rate
    attack = np.minimum(t / 0.08, 1.0)
    decay = 0.55 + 0.45 * np.exp(-t / 0.5)
    release = np.clip((chord_seconds + release_seconds - t) / release_seconds, 0.0, 1.0)
    envelope = attack * decay * release**2
    for index, chord in enumerate(chords):
        start = round(index * chord_seconds * rate)
        for voice, midi in enumerate(chord):
            freq = 440.0 * 2 ** ((midi - 69) / 12)
            tone = (
                np.sin(2 * np.pi * freq * t)
                + 0.25 * np.sin(2 * np.pi * 2 * freq * t)
                + 0.08 * np.sin(2 * np.pi * 3 * freq * t)
            )
            weight = 0.9 if voice == 0 else 0.55
            note = weight * tone * envelope
            end = start + note_length
            out[start : min(end, total)] += note[: total - start]
            if end > total:  # the last chord's release wraps to the start: seamless loop
                out[: end - total] += note[total - start :]
    tremolo = 1.0 + 0.08 * np.sin(2 * np.pi * 0.4 * np.arange(total) / rate)
    out *= tremolo
    rms = float(np.sqrt(np.mean(out * out)))
    return _to_pcm(out * 32768.0 * 10 ** ((TARGET_RMS_DBFS - 4) / 20) / rms)


def digit_name(digit: str) -> str:
    return DIGIT_NAMES.get(digit, digit)


class Writer:
    """Writes files only when their bytes change; in check mode, only records changes."""

    def __init__(self, check: bool) -> None:
        self.check = check
        self.changed: list[Path] = []
        self.entries: list[Entry] = []
        self._tmp = Path(tempfile.mkdtemp(prefix="hitl-corpus-"))

    def close(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)

    def emit(
        self, path: Path, write: Callable[[Path], None], description: str, seconds: float
    ) -> None:
        staged = self._tmp / path.name
        write(staged)
        new = staged.read_bytes()
        self.entries.append(Entry(path, description, seconds, len(new)))
        if path.exists() and path.read_bytes() == new:
            return
        self.changed.append(path)
        if self.check:
            print(f"would change: {path.relative_to(ROOT)}")
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(new)
        print(f"wrote {path.relative_to(ROOT)} ({len(new)} bytes, {seconds:.2f} s)")

    def wav(self, path: Path, rate: int, pcm: bytes, description: str) -> None:
        self.emit(path, lambda p: write_wav(p, rate, pcm), description, len(pcm) / 2 / rate)

    def pcap(self, path: Path, packets: list[tuple[float, bytes]], description: str) -> None:
        seconds = packets[-1][0] - packets[0][0] + 0.02 if packets else 0.0
        self.emit(
            path,
            lambda p: write_udp_pcap(p, packets, src=PCAP_SRC, dst=PCAP_DST),
            description,
            seconds,
        )

    def text(self, path: Path, content: str) -> None:
        def write(staged: Path) -> None:
            staged.write_text(content, encoding="utf-8")

        self.emit(path, write, "", 0.0)


def caller_pcaps(writer: Writer, name: str, text: str, pcm_8k: bytes) -> None:
    for codec, payload_type, encode in (("pcmu", 0, ulaw_encode), ("pcma", 8, alaw_encode)):
        payloads = [encode(frame) for frame in frames(pcm_8k, 2 * SAMPLES_PER_FRAME)]
        packets = rtp_stream_packets(
            payloads,
            payload_type,
            SAMPLES_PER_FRAME,
            ssrc=CALLER_SSRC,
            start_seq=AUDIO_START_SEQ,
            start_ts=AUDIO_START_TS,
            start_time=PCAP_EPOCH,
        )
        writer.pcap(
            CORPUS / "pcap" / f"{name}_{codec}.pcap",
            packets,
            f'{codec.upper()} (PT {payload_type}) RTP of "{text}"',
        )


TONE_SECONDS = 40.0
TONE_START_SEQ = 40000  # after the DTMF pcaps' sequence numbers: a call may play both
TONE_START_TS = 6_400_000


def tone_pcaps(writer: Writer) -> None:
    """A steady 440 Hz caller tone at -12 dBFS (the media bridge's loopback tests)."""
    n = int(TONE_SECONDS * TELEPHONE_RATE)
    t = np.arange(n) / TELEPHONE_RATE
    pcm = _to_pcm(np.sin(2 * np.pi * 440.0 * t) * (10 ** (-12 / 20)) * 32767)
    payloads = [ulaw_encode(frame) for frame in frames(pcm, 2 * SAMPLES_PER_FRAME)]
    packets = rtp_stream_packets(
        payloads, 0, SAMPLES_PER_FRAME, ssrc=CALLER_SSRC, start_seq=TONE_START_SEQ,
        start_ts=TONE_START_TS, start_time=PCAP_EPOCH,
    )
    writer.pcap(CORPUS / "pcap" / "tone_440_pcmu.pcap", packets,
                f"PCMU (PT 0) RTP of a steady 440 Hz tone, -12 dBFS, {TONE_SECONDS:.0f} s")


def dtmf_pcaps(writer: Writer) -> None:
    variants = [(digit, 101, True) for digit in DTMF_DIGITS]
    variants += [(digit, 96, False) for digit in NOMARKER_DIGITS]
    for digit, payload_type, marker in variants:
        # Each digit gets its own sequence/timestamp window (in DTMF_EVENTS order) so that a
        # call playing several digit pcaps in ascending order presents advancing RTP like a
        # real phone; identical numbers would be discarded by the receiver as duplicates.
        index = DTMF_EVENTS.index(digit)
        packets = dtmf_event_packets(
            digit,
            payload_type,
            marker=marker,
            start_seq=DTMF_START_SEQ + 50 * index,
            timestamp=DTMF_TIMESTAMP + 16000 * index,
            ssrc=CALLER_SSRC,
            duration_ms=160,
            start_time=PCAP_EPOCH,
        )
        suffix = f"pt{payload_type}" + ("" if marker else "_nomarker")
        marker_text = "marker on first packet" if marker else "NO marker bit"
        writer.pcap(
            CORPUS / "pcap" / f"dtmf_{digit_name(digit)}_{suffix}.pcap",
            packets,
            f"RFC 4733 digit {digit}, PT {payload_type}, {marker_text}, 160 ms",
        )


def readme(entries: list[Entry]) -> str:
    rows = []
    for entry in sorted(entries, key=lambda entry: entry.path):
        rows.append(
            f"| `{entry.path.relative_to(CORPUS)}` | {entry.seconds:.2f} s "
            f"| {entry.size / 1024:.1f} KiB | {entry.description} |"
        )
    table = "\n".join(rows)
    total = sum(entry.size for entry in entries)
    return f"""# Test media corpus

Synthetic audio and RTP captures for the unit, SIPp and end-to-end tests. Everything here
is generated by `rtp/generate.py` from the texts in `rtp/corpus.toml` and committed, so
tests never need espeak-ng at run time.

## Regenerating

```sh
make corpus                       # or: .venv/bin/python rtp/generate.py
.venv/bin/python rtp/generate.py --check   # exit 1 if a file would change
```

Requires `espeak-ng` (speech). Resampling, levels, G.711, RTP and pcap framing are done
in numpy by `hitl_sip.media`; SSRCs, sequence numbers, timestamps and capture times are
fixed, so reruns are byte-identical for the same espeak-ng version (a different
espeak-ng release may change the speech files; commit the result).

## Formats

- **`prompts/*.wav`** — server prompts, 16 kHz mono 16-bit PCM WAV, normalized to
  about {TARGET_RMS_DBFS:.0f} dBFS RMS (peaks below {PEAK_LIMIT_DBFS:.0f} dBFS).
- **`caller/<name>_8k.wav`, `caller/<name>_16k.wav`** — caller utterances, mono 16-bit
  PCM WAV, same level, with {CALLER_LEAD_SECONDS:.1f} s of leading and
  {CALLER_TAIL_SECONDS:.1f} s of trailing silence.
- **`music/hold.wav`** — synthesized hold music (four soft chords), 16 kHz mono 16-bit
  PCM WAV; the last chord's release wraps onto the start so it loops without a click.
- **`pcap/<name>_pcmu.pcap`, `pcap/<name>_pcma.pcap`** — the 8 kHz caller utterance as
  G.711 RTP: PT 0 (PCMU) or PT 8 (PCMA), 20 ms / 160 samples per packet, marker bit on
  the first packet, SSRC `0x{CALLER_SSRC:08X}`, sequence from {AUDIO_START_SEQ},
  timestamp from {AUDIO_START_TS}. Classic libpcap, linktype 1 (Ethernet), IPv4/UDP
  `{PCAP_SRC[0]}:{PCAP_SRC[1]}` → `{PCAP_DST[0]}:{PCAP_DST[1]}` with valid checksums,
  capture times from {PCAP_EPOCH:.0f} s (Unix) every 20 ms — ready for SIPp
  `<exec play_pcap_audio="..."/>`, which rewrites addresses and ports.
- **`pcap/dtmf_<digit>_pt101.pcap`** — one RFC 4733 telephone-event (digits 0–9,
  `star` = `*`, `hash` = `#`), PT 101, volume 10, 160 ms: seven updates every 20 ms
  with growing duration (160 … 1120 ticks), then three end packets repeating duration
  1280; all share RTP timestamp {DTMF_TIMESTAMP}; sequence from {DTMF_START_SEQ};
  marker bit on the first packet only; same SSRC as the audio captures.
- **`pcap/dtmf_<digit>_pt96_nomarker.pcap`** — the same events with PT 96 and **no
  marker bit** on any packet, as some carriers send them: a receiver must detect the
  event start from the new timestamp, not the marker.

## Files

| File | Duration | Size | Content |
|---|---|---|---|
{table}

Total: {total / 1024 / 1024:.2f} MiB in {len(entries)} files
(plus this README and `corpus.toml`).
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 on change")
    args = parser.parse_args(argv)

    with open(CORPUS / "corpus.toml", "rb") as f:
        corpus = tomllib.load(f)
    voice: dict[str, object] = corpus["voice"]
    writer = Writer(check=args.check)
    try:
        for name, text in corpus["prompts"].items():
            rate, pcm = synthesize(text, voice)
            prompt = normalize(resample(pcm, rate, PROMPT_RATE), PROMPT_RATE)
            writer.wav(CORPUS / "prompts" / f"{name}.wav", PROMPT_RATE, prompt, f'"{text}"')

        for name, text in corpus["caller"].items():
            rate, pcm = synthesize(text, voice)
            speech = normalize(pcm, rate)
            for out_rate in (TELEPHONE_RATE, PROMPT_RATE):
                padded = (
                    silence(CALLER_LEAD_SECONDS, out_rate)
                    + resample(speech, rate, out_rate)
                    + silence(CALLER_TAIL_SECONDS, out_rate)
                )
                label = out_rate // 1000
                writer.wav(
                    CORPUS / "caller" / f"{name}_{label}k.wav",
                    out_rate,
                    padded,
                    f'"{text}" ({label} kHz)',
                )
                if out_rate == TELEPHONE_RATE:
                    caller_pcaps(writer, name, text, padded)

        writer.wav(
            CORPUS / "music" / "hold.wav",
            MUSIC_RATE,
            hold_music(MUSIC_RATE),
            "hold music: Cmaj7, Am7, Fmaj7, G6 chords, loopable",
        )
        dtmf_pcaps(writer)
        tone_pcaps(writer)
        entries = list(writer.entries)
        writer.text(CORPUS / "README.md", readme(entries))
    finally:
        writer.close()

    if args.check:
        return 1 if writer.changed else 0
    if not writer.changed:
        print("corpus up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
