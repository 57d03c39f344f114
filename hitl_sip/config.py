"""Server configuration: embedded defaults < TOML file < ``HITL_SIP_*`` environment < flags.

Every key has a dotted name (``sip.port``, ``worker.max_calls``); the environment form is
``HITL_SIP_`` plus the dotted name upper-cased with dots as underscores
(``HITL_SIP_SIP_PORT``, ``HITL_SIP_WORKER_MAX_CALLS``). Validation happens once, at start,
and a bad value raises :class:`~hitl_sip.errors.ConfigError` naming the key; the CLI turns
that into exit code 2.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import shutil
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from hitl_sip.errors import ConfigError
from hitl_sip.hub.tokens import parse_secret

PACKAGE_ROOT = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_ROOT.parent

# pjsua2-python 2.15.1 is compiled with PJSUA_MAX_CALLS=4 (see DESIGN.md §3). One pjsua call
# slot is kept free so that a call beyond the worker limit can still be answered 503 by us
# instead of 486 by pjsua, hence at most 3 admitted calls per worker process.
PJSUA_COMPILED_MAX_CALLS = 4
MAX_ADMITTED_CALLS_PER_WORKER = PJSUA_COMPILED_MAX_CALLS - 1

TRANSPORTS = ("udp", "tcp")
LOG_LEVELS = ("debug", "info", "warning", "error")
CLOCK_RATES = (8000, 16000)
STT_ENGINES = ("pocketsphinx", "azure")
TTS_ENGINES = ("espeak", "azure")


@dataclass(frozen=True)
class SipConfig:
    host: str = "0.0.0.0"
    port: int = 5060
    transports: tuple[str, ...] = ("udp", "tcp")
    profile: str = "local"
    user_agent: str = "hitl-sip"
    # the digest-nonce secret (hex or base64, >= 32 bytes) for hubs that must accept each
    # other's nonces; "" = <data_dir>/digest.key, created on first start
    digest_secret: str = ""


@dataclass(frozen=True)
class HttpConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    # the agent dashboard's build, served at /; "" serves none
    dashboard_dir: str = "agent-app/dist/agent-app/browser"


@dataclass(frozen=True)
class WorkerConfig:
    count: int = 1
    max_calls: int = MAX_ADMITTED_CALLS_PER_WORKER
    retry_after: int = 30
    answer_delay_ms: int = 0
    max_call_seconds: float = 14400.0
    drain_grace: float = 30.0
    record_calls: bool = True
    # 8 kHz: trunk audio is G.711 narrowband, and the embedded recogniser reads true 8 kHz
    # far better than 8 kHz upsampled by the bridge (see DESIGN.md §3); 16000 for G.722.
    clock_rate: int = 8000
    buffer_frames: int = 50
    restart_backoff: float = 1.0


@dataclass(frozen=True)
class BotConfig:
    flow: str = "flows/demo.yaml"  # a flow file, or "external" for the /bot namespace
    hold_audio: str = "rtp/music/hold.wav"
    barge_in_dbfs: float = -35.0
    external_timeout: float = 10.0


@dataclass(frozen=True)
class SpeechConfig:
    stt: str = "pocketsphinx"
    tts: str = "espeak"
    language: str = "en-US"
    voice: str = ""
    azure_key: str = ""
    azure_region: str = ""
    azure_endpoint: str = ""
    tts_cache_dir: str = ""
    # the voice-activity gate (Silero VAD) in front of the recogniser: tones, DTMF and
    # line noise reach no recogniser; a window opens it at this speech probability
    vad: bool = True
    vad_threshold: float = 0.5


@dataclass(frozen=True)
class RoutingConfig:
    queue_timeout: float = 60.0
    ring_timeout: float = 20.0
    strategy: str = "ring_all"  # ring_all | round_robin | longest_idle
    reconnect_grace: float = 5.0


@dataclass(frozen=True)
class ApiConfig:
    keys: tuple[str, ...] = ()
    agent_origins: tuple[str, ...] = ()  # allowed Origin headers for /agent (empty: any)
    token_ttl: float = 43200.0


WEBRTC_CODECS = ("pcmu", "pcma", "opus")


@dataclass(frozen=True)
class WebRtcConfig:
    """The agent's WebRTC leg (the worker's aiortc peer)."""

    # Codec preference for the browser leg, first wins when the browser offers it. PCMU:
    # the trunk leg is G.711 anyway, so no transcoding and the least CPU (bench/README.md).
    codecs: tuple[str, ...] = ("pcmu", "opus")
    stun_servers: tuple[str, ...] = ()  # "stun:host:port"; aiortc uses the first
    turn_servers: tuple[str, ...] = ()  # "turn:host:port?transport=udp"; the first is used
    turn_username: str = ""
    turn_password: str = ""
    # Addresses (IPs or CIDRs) the peer gathers host candidates on. Empty: every interface
    # except loopback, link-local and container/bridge interfaces (docker0, br-*, veth*...).
    host_addresses: tuple[str, ...] = ()
    # 1:1 NAT: advertise this address in place of the host candidates' own (containers).
    public_address: str = ""
    # Agent audio queued ahead of the trunk's media clock, at most (older frames are dropped).
    max_lead_frames: int = 3
    # false: aiortc's stock ways, for comparison (bench/bridge_latency.py): its audio jitter
    # buffer (a frame leaves after 4 more arrived) and a caller track on its own 20 ms clock.
    low_latency: bool = True
    # No audio from a connected agent for this long means its media is gone (a killed
    # browser sends no DTLS close, and ICE consent takes ~30 s to fail); the hub then gives
    # it routing.reconnect_grace to renegotiate before the call is queued again.
    media_timeout: float = 3.0


@dataclass(frozen=True)
class Alive5Config:
    """The alive5 connector (PROTOCOL.md §4); every name of the voice-agent profile."""

    url: str = ""  # empty: the local thread store is the only sink
    path: str = "socket.io"
    api_key: str = ""
    channel_id: str = ""
    message_type: str = "voice_agent_post_message"
    ack_timeout: float = 10.0
    max_backoff: float = 30.0
    query_type: str = "type"
    query_type_value: str = "voice_agent"
    query_api_key: str = "x-a5-apikey"
    query_thread: str = "thread_id"
    query_crm: str = "crm_id"
    query_channel: str = "channel_id"
    event_init: str = "init_voice_agent"
    event_init_ack: str = "init_voice_agent_ack"
    event_post: str = "post_message"
    event_post_ack: str = "post_message_ack"
    event_crm: str = "save_crm_data"
    event_crm_ack: str = "save_crm_data_ack"
    event_end: str = "end_voice_chat"
    # "" = alive5 acknowledges no end: it counts as delivered once sent
    event_end_ack: str = "end_voice_chat_ack"
    field_content: str = "message_content"
    field_type: str = "message_type"
    field_voice_agent: str = "voiceAgentId"
    field_key: str = "message_key"
    # who spoke, on every post (empty field name: not sent)
    field_sender: str = "sender"
    sender_caller: str = "person"
    sender_bot: str = "voice_agent"
    sender_agent: str = "human_agent"


@dataclass(frozen=True)
class FrontConfig:
    """The public SIP front (Kamailio) before the media workers (DESIGN.md §3)."""

    # "auto": Kamailio when worker.count > 1; "kamailio": always; "none": workers listen
    # on sip.host:sip.port + index themselves
    mode: str = "auto"
    kamailio: str = "kamailio"  # the binary
    modules_dir: str = ""  # "" = Debian's /usr/lib/<arch>/kamailio/modules
    worker_host: str = "127.0.0.1"  # where workers listen for the front
    worker_base_port: int = 0  # worker i listens on base + i; 0: free ports chosen at start
    probe_interval: int = 5  # OPTIONS to every worker, seconds
    pike_window: int = 2  # seconds
    pike_density: int = 30  # initial requests per window from one address before blocking
    children: int = 4
    # addresses workers accept the front's requests from; filled in by `serve`
    trusted: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClusterConfig:
    """Several hubs sharing state through Redis (hitl_sip/hub/cluster.py)."""

    redis_url: str = ""  # "" = a single hub; e.g. redis://10.0.0.5:6379/0
    hub_id: str = ""  # "" = <hostname>-<pid>


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    sip_trace: bool = False


@dataclass(frozen=True)
class Config:
    sip: SipConfig = field(default_factory=SipConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    log: LogConfig = field(default_factory=LogConfig)
    bot: BotConfig = field(default_factory=BotConfig)
    speech: SpeechConfig = field(default_factory=SpeechConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    webrtc: WebRtcConfig = field(default_factory=WebRtcConfig)
    alive5: Alive5Config = field(default_factory=Alive5Config)
    front: FrontConfig = field(default_factory=FrontConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    data_dir: str = "data"
    profiles_dir: str = str(PROJECT_ROOT / "sip_profiles")

    def resolve_path(self, value: str) -> Path:
        """Resolve a configured path: absolute as is, relative to the project root."""
        path = Path(value)
        return path if path.is_absolute() else PROJECT_ROOT / path

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS: dict[str, type[Any]] = {
    "sip": SipConfig,
    "http": HttpConfig,
    "worker": WorkerConfig,
    "log": LogConfig,
    "bot": BotConfig,
    "speech": SpeechConfig,
    "routing": RoutingConfig,
    "api": ApiConfig,
    "webrtc": WebRtcConfig,
    "alive5": Alive5Config,
    "front": FrontConfig,
    "cluster": ClusterConfig,
}
_TOP_LEVEL = ("data_dir", "profiles_dir")

# CLI flag name -> dotted key (PROTOCOL.md §5).
FLAG_KEYS: dict[str, str] = {
    "sip_host": "sip.host",
    "sip_port": "sip.port",
    "http_host": "http.host",
    "http_port": "http.port",
    "workers": "worker.count",
    "data_dir": "data_dir",
    "profile": "sip.profile",
    "max_calls": "worker.max_calls",
    "log_level": "log.level",
    "flow": "bot.flow",
    "stt": "speech.stt",
    "tts": "speech.tts",
    "alive5_url": "alive5.url",
    "alive5_api_key": "alive5.api_key",
    "alive5_channel_id": "alive5.channel_id",
}


def _field_types(cls: type[Any]) -> dict[str, Any]:
    return {f.name: f.type for f in fields(cls)}


def _coerce(key: str, value: Any, type_name: Any) -> Any:
    """Coerce a TOML/env/flag value to the field's declared type, or raise ConfigError."""
    type_name = str(type_name)
    if type_name == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(key, f"expected a boolean, got {value!r}")
    if type_name == "int":
        if isinstance(value, bool):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(key, f"expected an integer, got {value!r}")
    if type_name == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ConfigError(key, f"expected a number, got {value!r}")
    if type_name == "str":
        if isinstance(value, str):
            return value
        raise ConfigError(key, f"expected a string, got {value!r}")
    if type_name.startswith("tuple[str"):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(key, f"expected a list of strings, got {value!r}")
    raise ConfigError(key, f"unsupported type {type_name}")  # pragma: no cover


def _apply(values: dict[str, dict[str, Any]], top: dict[str, Any], key: str, raw: Any) -> None:
    if key in _TOP_LEVEL:
        top[key] = _coerce(key, raw, "str")
        return
    section, _, name = key.partition(".")
    cls = _SECTIONS.get(section)
    if cls is None or not name:
        raise ConfigError(key, "unknown configuration key")
    types = _field_types(cls)
    if name not in types:
        raise ConfigError(key, f"unknown key; known keys in [{section}]: {', '.join(types)}")
    values.setdefault(section, {})[name] = _coerce(key, raw, types[name])


def _flatten_toml(doc: Mapping[str, Any]) -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for k, v in doc.items():
        if isinstance(v, Mapping):
            for k2, v2 in v.items():
                if isinstance(v2, Mapping):
                    raise ConfigError(f"{k}.{k2}", "unexpected table")
                items.append((f"{k}.{k2}", v2))
        else:
            items.append((k, v))
    return items


def env_key(dotted: str) -> str:
    return "HITL_SIP_" + dotted.upper().replace(".", "_")


def _all_keys() -> list[str]:
    keys = list(_TOP_LEVEL)
    for section, cls in _SECTIONS.items():
        keys.extend(f"{section}.{f.name}" for f in fields(cls))
    return keys


def load_config(
    file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build a validated :class:`Config` from the layers (file < env < overrides)."""
    values: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    if file is not None:
        path = Path(file)
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise ConfigError("config", f"file not found: {path}") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError("config", f"{path}: invalid TOML: {e}") from e
        for key, raw in _flatten_toml(doc):
            _apply(values, top, key, raw)
    env = os.environ if env is None else env
    for key in _all_keys():
        name = env_key(key)
        if name in env:
            _apply(values, top, key, env[name])
    for alias, key in (("AZURE_SPEECH_KEY", "speech.azure_key"),
                       ("AZURE_SPEECH_REGION", "speech.azure_region")):
        if alias in env and env_key(key) not in env:
            _apply(values, top, key, env[alias])
    for key, raw in (overrides or {}).items():
        if raw is not None:
            _apply(values, top, key, raw)
    config = Config(
        sip=SipConfig(**values.get("sip", {})),
        http=HttpConfig(**values.get("http", {})),
        worker=WorkerConfig(**values.get("worker", {})),
        log=LogConfig(**values.get("log", {})),
        bot=BotConfig(**values.get("bot", {})),
        speech=SpeechConfig(**values.get("speech", {})),
        routing=RoutingConfig(**values.get("routing", {})),
        api=ApiConfig(**values.get("api", {})),
        webrtc=WebRtcConfig(**values.get("webrtc", {})),
        alive5=Alive5Config(**values.get("alive5", {})),
        front=FrontConfig(**values.get("front", {})),
        cluster=ClusterConfig(**values.get("cluster", {})),
        **top,
    )
    validate(config)
    return config


def _check_host(key: str, host: str) -> None:
    try:
        ipaddress.ip_address(host)
    except ValueError as e:
        raise ConfigError(key, f"expected an IP address to bind, got {host!r}") from e


def _check_port(key: str, port: int, *, allow_zero: bool = True) -> None:
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise ConfigError(key, f"expected a port in {low}..65535, got {port}")


def validate(config: Config) -> None:
    """Check cross-field and range constraints; raise ConfigError naming the key."""
    _check_host("sip.host", config.sip.host)
    _check_port("sip.port", config.sip.port)
    if not config.sip.transports:
        raise ConfigError("sip.transports", "at least one transport is required")
    for t in config.sip.transports:
        if t not in TRANSPORTS:
            raise ConfigError("sip.transports", f"unknown transport {t!r}; allowed: udp, tcp")
    if not config.sip.profile:
        raise ConfigError("sip.profile", "a profile name or file path is required")
    if config.sip.digest_secret:
        try:
            parse_secret(config.sip.digest_secret)
        except ValueError as e:
            raise ConfigError("sip.digest_secret", str(e)) from e
    _check_host("http.host", config.http.host)
    _check_port("http.port", config.http.port)
    w = config.worker
    if not 1 <= w.count <= 64:
        raise ConfigError("worker.count", f"expected 1..64 workers, got {w.count}")
    if w.count > 1 and config.sip.port and config.sip.port + w.count - 1 > 65535:
        raise ConfigError("worker.count", "sip.port + workers - 1 exceeds 65535")
    if not 1 <= w.max_calls <= MAX_ADMITTED_CALLS_PER_WORKER:
        raise ConfigError(
            "worker.max_calls",
            f"expected 1..{MAX_ADMITTED_CALLS_PER_WORKER}: the pjsua2 wheel is compiled with "
            f"PJSUA_MAX_CALLS={PJSUA_COMPILED_MAX_CALLS} and one slot answers 503 beyond the "
            f"limit; add workers for capacity (got {w.max_calls})",
        )
    if not 0 <= w.retry_after <= 3600:
        raise ConfigError("worker.retry_after", f"expected 0..3600 seconds, got {w.retry_after}")
    if not 0 <= w.answer_delay_ms <= 60000:
        raise ConfigError("worker.answer_delay_ms", f"expected 0..60000, got {w.answer_delay_ms}")
    if not 1 <= w.max_call_seconds <= 86400:
        raise ConfigError("worker.max_call_seconds", "expected 1..86400 seconds")
    if w.drain_grace < 0:
        raise ConfigError("worker.drain_grace", "must not be negative")
    if w.clock_rate not in CLOCK_RATES:
        raise ConfigError("worker.clock_rate", f"expected one of {CLOCK_RATES}")
    if not 0 < w.restart_backoff <= 60:
        raise ConfigError("worker.restart_backoff", "expected more than 0, at most 60 seconds")
    if not 5 <= w.buffer_frames <= 500:
        raise ConfigError("worker.buffer_frames", f"expected 5..500, got {w.buffer_frames}")
    if config.bot.flow != "external" and not config.resolve_path(config.bot.flow).is_file():
        raise ConfigError("bot.flow", f"flow file not found: {config.bot.flow}")
    if config.bot.hold_audio and not config.resolve_path(config.bot.hold_audio).is_file():
        raise ConfigError("bot.hold_audio", f"file not found: {config.bot.hold_audio}")
    if not -60 <= config.bot.barge_in_dbfs <= 0:
        raise ConfigError("bot.barge_in_dbfs", "expected -60..0 dBFS")
    if config.speech.stt not in STT_ENGINES:
        raise ConfigError("speech.stt", f"expected one of {', '.join(STT_ENGINES)}")
    if config.speech.tts not in TTS_ENGINES:
        raise ConfigError("speech.tts", f"expected one of {', '.join(TTS_ENGINES)}")
    if not 0.2 <= config.speech.vad_threshold <= 0.95:
        raise ConfigError("speech.vad_threshold",
                          f"expected a speech probability in 0.2..0.95, got "
                          f"{config.speech.vad_threshold}")
    for kind in ("stt", "tts"):
        if getattr(config.speech, kind) == "azure" and not (
            config.speech.azure_key and (config.speech.azure_region or config.speech.azure_endpoint)
        ):
            raise ConfigError(
                "speech.azure_key",
                f"speech.{kind} = azure needs speech.azure_key and speech.azure_region or "
                "speech.azure_endpoint (or AZURE_SPEECH_KEY / AZURE_SPEECH_REGION)",
            )
    if not 1 <= config.routing.queue_timeout <= 3600:
        raise ConfigError("routing.queue_timeout", "expected 1..3600 seconds")
    if config.routing.strategy not in ("ring_all", "round_robin", "longest_idle"):
        raise ConfigError("routing.strategy", "expected ring_all, round_robin or longest_idle")
    if not 1 <= config.routing.ring_timeout <= 600:
        raise ConfigError("routing.ring_timeout", "expected 1..600 seconds")
    if not 0 <= config.routing.reconnect_grace <= 300:
        raise ConfigError("routing.reconnect_grace", "expected 0..300 seconds")
    if not 60 <= config.api.token_ttl <= 7 * 86400:
        raise ConfigError("api.token_ttl", "expected 60 seconds .. 7 days")
    for key in config.api.keys:
        if len(key) < 16:
            raise ConfigError("api.keys", "API keys must be at least 16 characters")
    _validate_webrtc(config.webrtc)
    a5 = config.alive5
    if a5.url and not a5.url.startswith(("http://", "https://", "ws://", "wss://")):
        raise ConfigError("alive5.url", f"expected an http(s) or ws(s) URL, got {a5.url!r}")
    if a5.url and not a5.api_key:
        raise ConfigError("alive5.api_key", "alive5.url needs alive5.api_key")
    if not 0.5 <= a5.ack_timeout <= 120:
        raise ConfigError("alive5.ack_timeout", "expected 0.5..120 seconds")
    if not 0.5 <= a5.max_backoff <= 600:
        raise ConfigError("alive5.max_backoff", "expected 0.5..600 seconds")
    _validate_front(config)
    url = config.cluster.redis_url
    if url and not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("cluster.redis_url", f"expected redis://host:port[/db], got {url!r}")
    if config.log.level not in LOG_LEVELS:
        raise ConfigError("log.level", f"expected one of {', '.join(LOG_LEVELS)}")
    if not config.resolve_path(config.profiles_dir).is_dir():
        raise ConfigError("profiles_dir", f"not a directory: {config.profiles_dir}")


def _validate_front(config: Config) -> None:
    f = config.front
    if f.mode not in ("auto", "kamailio", "none"):
        raise ConfigError("front.mode", f"expected auto, kamailio or none, got {f.mode!r}")
    if uses_front(config) and not shutil.which(f.kamailio):
        raise ConfigError(
            "front.mode",
            f"{config.worker.count} workers need the Kamailio front, and {f.kamailio!r} is not "
            "installed (Debian: apt-get install kamailio); or set front.mode = none",
        )
    if uses_front(config) and config.sip.port == 0:
        raise ConfigError("sip.port", "the SIP front (Kamailio) needs a fixed port, not 0")
    _check_host("front.worker_host", f.worker_host)
    if f.worker_base_port and not 1024 <= f.worker_base_port <= 65535 - config.worker.count:
        raise ConfigError("front.worker_base_port", "expected 0 or a port 1024..65535")
    if not 1 <= f.probe_interval <= 300:
        raise ConfigError("front.probe_interval", "expected 1..300 seconds")
    if not 1 <= f.pike_window <= 60:
        raise ConfigError("front.pike_window", "expected 1..60 seconds")
    if not 2 <= f.pike_density <= 100000:
        raise ConfigError("front.pike_density", "expected 2..100000 requests per window")
    if not 1 <= f.children <= 64:
        raise ConfigError("front.children", "expected 1..64")


def uses_front(config: Config) -> bool:
    """Whether ``serve`` puts Kamailio before the workers."""
    mode = config.front.mode
    return mode == "kamailio" or (mode == "auto" and config.worker.count > 1)


def _validate_webrtc(w: WebRtcConfig) -> None:
    if not w.codecs:
        raise ConfigError("webrtc.codecs", f"at least one of {', '.join(WEBRTC_CODECS)}")
    for codec in w.codecs:
        if codec not in WEBRTC_CODECS:
            raise ConfigError("webrtc.codecs",
                              f"unknown codec {codec!r}; allowed: {', '.join(WEBRTC_CODECS)}")
    for url in w.stun_servers:
        if not url.startswith("stun:"):
            raise ConfigError("webrtc.stun_servers", f"expected stun:host[:port], got {url!r}")
    for url in w.turn_servers:
        if not url.startswith(("turn:", "turns:")):
            raise ConfigError("webrtc.turn_servers", f"expected turn:host[:port], got {url!r}")
    if w.turn_servers and not (w.turn_username and w.turn_password):
        raise ConfigError("webrtc.turn_username",
                          "webrtc.turn_servers needs webrtc.turn_username and turn_password")
    for address in w.host_addresses:
        try:
            ipaddress.ip_network(address, strict=False)
        except ValueError as e:
            raise ConfigError("webrtc.host_addresses",
                              f"expected an IP address or CIDR, got {address!r}") from e
    if w.public_address:
        try:
            ipaddress.ip_address(w.public_address)
        except ValueError as e:
            raise ConfigError("webrtc.public_address",
                              f"expected an IP address, got {w.public_address!r}") from e
    if not 1 <= w.max_lead_frames <= 25:
        raise ConfigError("webrtc.max_lead_frames", f"expected 1..25, got {w.max_lead_frames}")
    if not 0.5 <= w.media_timeout <= 60:
        raise ConfigError("webrtc.media_timeout", "expected 0.5..60 seconds")


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """Rebuild a Config from :meth:`Config.to_dict` output (how the hub hands it to workers)."""
    overrides: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            for name, inner in value.items():
                overrides[f"{key}.{name}"] = list(inner) if isinstance(inner, tuple) else inner
        else:
            overrides[key] = value
    return load_config(None, env={}, overrides=overrides)
