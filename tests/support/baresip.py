"""Runs Debian's ``baresip`` (1.0.x) as a headless softphone that places one call.

baresip is configured from a throwaway directory (``-f``), never from ``~/.baresip``:

- no audio devices: the microphone is the ``aufile`` source and no player module is
  loaded, so baresip skips the player; the ``sndfile`` filter records the call into
  ``<config>/recordings`` as ``dump-<YYYY-MM-DD-HH-MM-SS>-dec.wav`` (what it received,
  decoded) and ``...-enc.wav`` (what it sent), mono s16 at the codec rate (8 kHz for G.711);
- SIP on 127.0.0.1 at a free port over UDP, RTP on a free port pair, ``net_interface
  127.0.0.1`` so the SDP offers 127.0.0.1 rather than the host's LAN address;
- only the ``g711`` codec module, and the account restricted to PCMU;
- no console UI (no ``stdio``/``cons`` module, stdin is /dev/null); the ``menu`` module
  runs the ``-e "/dial …"`` command given on the command line.

Over TLS (``transport="tls"``) baresip is a TLS client that accepts any server certificate
(libre 1.1 verifies none) and listens for TLS itself on its SIP port + 1; ``mediaenc``
loads the ``srtp`` module and sets the account's media encryption (``srtp-mand``: SDES
SRTP offered as ``RTP/SAVP``, nothing else accepted). ``sip_trace`` (``-s``) writes every
SIP message baresip sends and receives to its log, decrypted: the test reads the SDP
answer there.

The call lasts exactly as long as the microphone file: when ``aufile`` reaches the end of
the file the ``menu`` module hangs up (BYE). ``start_softphone`` therefore surrounds the
microphone audio with silence: ``speak_at`` seconds before it, and after it up to
``call_seconds``. ``-t`` makes baresip quit on its own later still, as a backstop if a
test forgets to stop it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hitl_sip.media.wav import read_wav, resample, write_wav
from tests.support.net import free_port, free_port_pair

BARESIP = shutil.which("baresip") or "/usr/bin/baresip"
MODULE_PATH = Path("/usr/lib/baresip/modules")
#: G.711 runs at 8 kHz and aufile only accepts a file at the source rate (the codec's).
MICROPHONE_RATE = 8000


@dataclass
class Softphone:
    process: subprocess.Popen[bytes]
    config_dir: Path
    log_path: Path
    sip_port: int
    rtp_port: int  # baresip's RTP goes out of one of rtp_port .. rtp_port + 3

    @property
    def recordings_dir(self) -> Path:
        return self.config_dir / "recordings"

    def received_wav(self) -> Path:
        """The decoded audio baresip received (complete once the process has stopped)."""
        return self._dump("dec")

    def sent_wav(self) -> Path:
        """The audio baresip encoded and sent (complete once the process has stopped)."""
        return self._dump("enc")

    def _dump(self, direction: str) -> Path:
        found = sorted(self.recordings_dir.glob(f"dump-*-{direction}.wav"))
        if len(found) != 1:
            raise AssertionError(
                f"expected one sndfile {direction} recording, found {[p.name for p in found]}"
                f"\n--- baresip log ---\n{self.log()}"
            )
        return found[0]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-8000:]

    def stop(self, timeout: float = 10.0) -> int:
        """Ask baresip to quit (SIGTERM hangs up and closes the recordings); kill if stuck."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)


def _write_microphone(source: Path, target: Path, speak_at: float, call_seconds: float) -> None:
    rate, pcm = read_wav(source)
    pcm = bytes(round(speak_at * MICROPHONE_RATE) * 2) + resample(pcm, rate, MICROPHONE_RATE)
    total = round(call_seconds * MICROPHONE_RATE) * 2
    if len(pcm) > total:
        raise ValueError(f"{source} does not fit into a {call_seconds} s call at {speak_at} s")
    write_wav(target, MICROPHONE_RATE, pcm + bytes(total - len(pcm)))


def write_config(config_dir: Path, *, sip_port: int, rtp_port: int, microphone: Path,
                 transport: str = "udp", mediaenc: str | None = None) -> None:
    recordings = config_dir / "recordings"
    recordings.mkdir(parents=True, exist_ok=True)
    lines = {
        "poll_method": "epoll",
        "sip_listen": f"127.0.0.1:{sip_port}",
        "sip_trans_def": transport,
        "net_interface": "127.0.0.1",
        "rtp_ports": f"{rtp_port}-{rtp_port + 3}",
        "audio_source": f"aufile,{microphone}",
        "audio_level": "no",
        "module_path": str(MODULE_PATH),
        "snd_path": str(recordings),
    }
    modules = [
        ("module", "g711.so"),
        ("module", "aufile.so"),
        ("module", "sndfile.so"),
        *([("module", "srtp.so")] if mediaenc else []),
        ("module_app", "account.so"),
        ("module_app", "menu.so"),
    ]
    text = [f"{key}\t{value}" for key, value in lines.items()]
    text += [f"{key}\t{value}" for key, value in modules]
    (config_dir / "config").write_text("\n".join(text) + "\n")
    aor = "<sip:softphone@127.0.0.1>" if transport == "udp" else (
        f"<sip:softphone@127.0.0.1;transport={transport}>")
    account = f"{aor};regint=0;audio_codecs=PCMU" + (f";mediaenc={mediaenc}" if mediaenc else "")
    (config_dir / "accounts").write_text(account + "\n")


def start_softphone(
    tmp: Path,
    *,
    dial: str,
    microphone: Path,
    call_seconds: float,
    speak_at: float = 0.0,
    quit_after: float | None = None,
    transport: str = "udp",
    mediaenc: str | None = None,
    sip_trace: bool = False,
) -> Softphone:
    """Start baresip, which dials ``dial`` at once and hangs up after ``call_seconds``.

    The microphone plays ``microphone`` (any rate, resampled to 8 kHz) ``speak_at``
    seconds after the call starts, then silence until the hang-up. ``transport``,
    ``mediaenc`` and ``sip_trace``: see the module docstring.
    """
    config_dir = tmp / "baresip"
    config_dir.mkdir(parents=True, exist_ok=True)
    mic = config_dir / "microphone.wav"
    _write_microphone(microphone, mic, speak_at, call_seconds)
    sip_port = free_port()
    rtp_port = free_port_pair()
    write_config(config_dir, sip_port=sip_port, rtp_port=rtp_port, microphone=mic,
                 transport=transport, mediaenc=mediaenc)
    quit_after = quit_after if quit_after is not None else call_seconds + 20
    log_path = tmp / "baresip.log"
    args = [BARESIP, "-f", str(config_dir), "-e", f"/dial {dial}", "-t", str(int(quit_after))]
    if sip_trace:
        args.append("-s")
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HOME": str(config_dir)},
            cwd=config_dir,
        )
    return Softphone(proc, config_dir, log_path, sip_port, rtp_port)


@contextmanager
def running_softphone(
    tmp: Path,
    *,
    dial: str,
    microphone: Path,
    call_seconds: float,
    speak_at: float = 0.0,
    transport: str = "udp",
    mediaenc: str | None = None,
    sip_trace: bool = False,
) -> Iterator[Softphone]:
    phone = start_softphone(
        tmp, dial=dial, microphone=microphone, call_seconds=call_seconds, speak_at=speak_at,
        transport=transport, mediaenc=mediaenc, sip_trace=sip_trace,
    )
    try:
        yield phone
    finally:
        phone.stop()
