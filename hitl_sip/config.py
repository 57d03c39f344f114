"""Server configuration: embedded defaults < TOML file < ``HITL_SIP_*`` environment < flags.

Every key has a dotted name (``sip.port``, ``worker.max_calls``); the environment form is
``HITL_SIP_`` plus the dotted name upper-cased with dots as underscores
(``HITL_SIP_SIP_PORT``, ``HITL_SIP_WORKER_MAX_CALLS``). Validation happens once, at start,
and a bad value raises :class:`~hitl_sip.errors.ConfigError` naming the key; the CLI turns
that into exit code 2.

The sections are frozen pydantic dataclasses (``dataclasses.replace`` and ``asdict`` keep
working on them) that forbid unknown keys; pydantic-settings stacks the layers
(:class:`_Layers`), and :func:`validate` runs the checks across keys once it is built.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import shutil
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from hitl_sip.errors import ConfigError
from hitl_sip.hub.tokens import parse_secret
from hitl_sip.sip.uri import SipUri

PACKAGE_ROOT = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_ROOT.parent

# pjsua2-python 2.15.1 is compiled with PJSUA_MAX_CALLS=4 (see DESIGN.md §3). One pjsua call
# slot is kept free so that a call beyond the worker limit can still be answered 503 by us
# instead of 486 by pjsua, hence at most 3 admitted calls per worker process.
PJSUA_COMPILED_MAX_CALLS = 4
MAX_ADMITTED_CALLS_PER_WORKER = PJSUA_COMPILED_MAX_CALLS - 1

TRANSPORTS = ("udp", "tcp", "tls")
LOG_LEVELS = ("debug", "info", "warning", "error")
CLOCK_RATES = (8000, 16000)
STT_ENGINES = ("pocketsphinx", "azure")
# pocketsphinx search presets (SPEED_PRESETS in hitl_sip/speech/stt/pocketsphinx_engine.py)
STT_SPEEDS = ("accurate", "balanced", "fast")
TTS_ENGINES = ("espeak", "azure")


# Field types. The file gives TOML values, the environment and flags give strings: each
# type takes both, and refuses the rest with the message the ConfigError carries.
def _invalid(expected: str, value: object) -> PydanticCustomError:
    return PydanticCustomError("config_value", "expected {expected}, got {value}",
                               {"expected": expected, "value": repr(value)})


def _to_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
        return False
    raise _invalid("a boolean", value)


def _to_int(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise _invalid("an integer", value)


def _to_float(value: object) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise _invalid("a number", value)


def _to_str(value: object) -> str:
    if isinstance(value, str):
        return value
    raise _invalid("a string", value)


def _to_strs(value: object) -> tuple[str, ...]:
    """A list of strings; from the environment or a flag, comma-separated (``k1,k2``)."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise _invalid("a list of strings", value)


_Bool = Annotated[bool, BeforeValidator(_to_bool)]
_Int = Annotated[int, BeforeValidator(_to_int)]
_Float = Annotated[float, BeforeValidator(_to_float)]
_Str = Annotated[str, BeforeValidator(_to_str)]
_Strs = Annotated[tuple[str, ...], BeforeValidator(_to_strs)]

_SECTION = ConfigDict(extra="forbid")


@dataclass(frozen=True, config=_SECTION)
class SipConfig:
    host: _Str = "0.0.0.0"
    port: _Int = 5060
    transports: _Strs = ("udp", "tcp")
    profile: _Str = "local"
    user_agent: _Str = "hitl-sip"
    # the digest-nonce secret (hex or base64, >= 32 bytes) for hubs that must accept each
    # other's nonces; "" = <data_dir>/digest.key, created on first start
    digest_secret: _Str = ""
    # SIP over TLS on the front (when "tls" is in transports); 0 = a free port chosen at start
    tls_port: _Int = 5061
    # PEM paths; both "" = a self-signed pair made once under <data_dir>/front/tls/
    tls_certificate: _Str = ""
    tls_private_key: _Str = ""


@dataclass(frozen=True, config=_SECTION)
class HttpConfig:
    host: _Str = "127.0.0.1"
    port: _Int = 8080
    # the agent dashboard's build, served at /; "" serves none
    dashboard_dir: _Str = "agent-app/dist/agent-app/browser"
    # HTTPS for the dashboard, REST and Socket.IO (then HSTS); without a configured pair a
    # self-signed one is made under <data_dir>/http/tls
    tls: _Bool = False
    tls_certificate: _Str = ""
    tls_private_key: _Str = ""
    # /metrics, the detailed /healthz and the workers' link: never on the public listener
    internal_host: _Str = "127.0.0.1"
    internal_port: _Int = 8081  # 0: any free port (logged)


@dataclass(frozen=True, config=_SECTION)
class WorkerConfig:
    count: _Int = 1
    max_calls: _Int = MAX_ADMITTED_CALLS_PER_WORKER
    retry_after: _Int = 30
    answer_delay_ms: _Int = 0
    max_call_seconds: _Float = 14400.0
    drain_grace: _Float = 30.0
    record_calls: _Bool = True
    # the two-channel recording's encoding: wav | flac | opus (Ogg Opus, 48 kHz)
    record_format: _Str = "wav"
    # 8 kHz: trunk audio is G.711 narrowband, and the embedded recogniser reads true 8 kHz
    # far better than 8 kHz upsampled by the bridge (see DESIGN.md §3); 16000 for G.722.
    clock_rate: _Int = 8000
    buffer_frames: _Int = 50
    restart_backoff: _Float = 1.0
    # a relay of the worker's own in front of pjmedia for each plain-RTP G.711 call at
    # 8 kHz (hitl_sip/worker/relay.py): the bridged call's audio skips the conference tick
    # (0-20 ms each way), foreign sources are dropped; SRTP calls go through pjmedia alone
    trunk_relay: _Bool = True


@dataclass(frozen=True, config=_SECTION)
class BotConfig:
    flow: _Str = "flows/demo.yaml"  # a flow file, or "external" for the /bot namespace
    hold_audio: _Str = "rtp/music/hold.wav"
    barge_in_dbfs: _Float = -35.0
    external_timeout: _Float = 10.0


@dataclass(frozen=True, config=_SECTION)
class SpeechConfig:
    stt: _Str = "pocketsphinx"
    tts: _Str = "espeak"
    language: _Str = "en-US"
    voice: _Str = ""
    azure_key: _Str = ""
    azure_region: _Str = ""
    azure_endpoint: _Str = ""
    tts_cache_dir: _Str = ""
    # the voice-activity gate (Silero VAD) in front of the recogniser: tones, DTMF and
    # line noise reach no recogniser; a window opens it at this speech probability
    vad: _Bool = True
    vad_threshold: _Float = 0.5
    # the embedded recogniser's search effort: accurate (pocketsphinx's defaults),
    # balanced (~45 % of accurate's CPU, the same G.711 WER 0.39) or fast (~35 %, WER
    # 0.43; with it test_alive5_faults' second sentence never ended its ask node in two
    # runs: bench/README.md)
    stt_speed: _Str = "balanced"


@dataclass(frozen=True, config=_SECTION)
class RoutingConfig:
    queue_timeout: _Float = 60.0
    ring_timeout: _Float = 20.0
    strategy: _Str = "ring_all"  # ring_all | round_robin | longest_idle
    reconnect_grace: _Float = 5.0
    # what an agent may choose in wrap_up (PROTOCOL.md §6), sent to alive5 as CRM data
    dispositions: _Strs = ("resolved", "follow_up", "escalated", "no_action", "other")
    # the queues an agent may transfer a call to (PROTOCOL.md §6); one pool of agents
    # today: a queue transfer rings every available agent but the one transferring
    queues: _Strs = ("support",)


@dataclass(frozen=True, config=_SECTION)
class ApiConfig:
    keys: _Strs = ()
    agent_origins: _Strs = ()  # allowed Origin headers for Socket.IO (empty: the hub's own)
    token_ttl: _Float = 43200.0


WEBRTC_CODECS = ("pcmu", "pcma", "opus")


@dataclass(frozen=True, config=_SECTION)
class WebRtcConfig:
    """The agent's WebRTC leg (the worker's aiortc peer)."""

    # Codec preference for the browser leg, first wins when the browser offers it. PCMU:
    # the trunk leg is G.711 anyway, so no transcoding and the least CPU (bench/README.md).
    codecs: _Strs = ("pcmu", "opus")
    stun_servers: _Strs = ()  # "stun:host:port"; aiortc uses the first
    turn_servers: _Strs = ()  # "turn:host:port?transport=udp"; the first is used
    turn_username: _Str = ""
    turn_password: _Str = ""
    # Addresses (IPs or CIDRs) the peer gathers host candidates on. Empty: every interface
    # except loopback, link-local and container/bridge interfaces (docker0, br-*, veth*...).
    host_addresses: _Strs = ()
    # 1:1 NAT: advertise this address in place of the host candidates' own (containers).
    public_address: _Str = ""
    # Agent audio queued ahead of the trunk's media clock, at most (older frames are dropped).
    max_lead_frames: _Int = 3
    # false: aiortc's stock ways, for comparison (bench/bridge_latency.py): its audio jitter
    # buffer (a frame leaves after 4 more arrived) and a caller track on its own 20 ms clock.
    low_latency: _Bool = True
    # A G.711 leg's RTP off aiortc's per-packet tasks once its DTLS handshake is done
    # (hitl_sip/worker/lean.py): SRTP with the handshake's keys, one callback a packet.
    # false: aiortc carries it (for comparison, bench/peer.py).
    lean_g711: _Bool = True
    # No audio from a connected agent for this long means its media is gone (a killed
    # browser sends no DTLS close, and ICE consent takes ~30 s to fail); the hub then gives
    # it routing.reconnect_grace to renegotiate before the call is queued again.
    media_timeout: _Float = 3.0


@dataclass(frozen=True, config=_SECTION)
class Alive5Config:
    """The alive5 connector (PROTOCOL.md §4); every name of the voice-agent profile."""

    url: _Str = ""  # empty: the local thread store is the only sink
    path: _Str = "socket.io"
    api_key: _Str = ""
    channel_id: _Str = ""
    message_type: _Str = "voice_agent_post_message"
    ack_timeout: _Float = 10.0
    max_backoff: _Float = 30.0
    # a restarted hub ends the threads its previous run left open after this long (its
    # workers report their calls' ends first)
    orphan_grace: _Float = 15.0
    query_type: _Str = "type"
    query_type_value: _Str = "voice_agent"
    query_api_key: _Str = "x-a5-apikey"
    query_thread: _Str = "thread_id"
    query_crm: _Str = "crm_id"
    query_channel: _Str = "channel_id"
    event_init: _Str = "init_voice_agent"
    event_init_ack: _Str = "init_voice_agent_ack"
    event_post: _Str = "post_message"
    event_post_ack: _Str = "post_message_ack"
    event_crm: _Str = "save_crm_data"
    event_crm_ack: _Str = "save_crm_data_ack"
    event_end: _Str = "end_voice_chat"
    # "" = alive5 acknowledges no end: it counts as delivered once sent
    event_end_ack: _Str = "end_voice_chat_ack"
    field_content: _Str = "message_content"
    field_type: _Str = "message_type"
    field_voice_agent: _Str = "voiceAgentId"
    field_key: _Str = "message_key"
    # who spoke, on every post (empty field name: not sent)
    field_sender: _Str = "sender"
    sender_caller: _Str = "person"
    sender_bot: _Str = "voice_agent"
    sender_agent: _Str = "human_agent"


@dataclass(frozen=True, config=_SECTION)
class FrontConfig:
    """The public SIP front (Kamailio) before the media workers (DESIGN.md §3)."""

    # "auto" / "kamailio": Kamailio before the workers, one worker included (the edge and
    # its rules are the same for every deployment); "none": workers listen on
    # sip.host:sip.port + index themselves, with no front (a lab on loopback, never a server
    # a trunk reaches)
    mode: _Str = "auto"
    kamailio: _Str = "kamailio"  # the binary
    modules_dir: _Str = ""  # "" = Debian's /usr/lib/<arch>/kamailio/modules
    worker_host: _Str = "127.0.0.1"  # where workers listen for the front
    worker_base_port: _Int = 0  # worker i listens on base + i; 0: free ports chosen at start
    probe_interval: _Int = 5  # OPTIONS to every worker, seconds
    pike_window: _Int = 2  # seconds
    pike_density: _Int = 30  # initial requests per window from one stranger before blocking
    trunk_rate: _Int = 50  # INVITEs per second from the trunks before the front answers 503
    children: _Int = 4
    # addresses workers accept the front's requests from; filled in by `serve`
    trusted: _Strs = ()
    # the media path behind the front: "rtpengine" (default): rtpengine relays RTP between
    # the trunk and the workers, drops packets from any address but the one the SDP names
    # (strict source, no endpoint learning) and the workers' media listens on worker_host
    # only; "direct": the trunk's RTP reaches the workers themselves (pjmedia latches to the
    # first source it hears: a lab only)
    media: _Str = "rtpengine"
    rtpengine: _Str = "rtpengine"  # the binary (Debian: rtpengine-daemon)
    # the address rtpengine's public side binds: "" = sip.host, or when that is a wildcard
    # the address of the default route; the profile's [nat] public_address is advertised
    media_host: _Str = ""
    # the workers' own RTP ports behind rtpengine (loopback; shared out among the workers);
    # the profile's [rtp] port_start..port_end is then rtpengine's public range
    worker_rtp_port_start: _Int = 30000
    worker_rtp_port_end: _Int = 30999


@dataclass(frozen=True, config=_SECTION)
class ClusterConfig:
    """Several hubs sharing state through Redis (hitl_sip/hub/cluster.py)."""

    redis_url: _Str = ""  # "" = a single hub; e.g. redis://:PASSWORD@10.0.0.5:6379/0
    hub_id: _Str = ""  # "" = <hostname>-<pid>
    # seals every message between hubs (HMAC-SHA256): the same value on every hub, hex or
    # base64, at least 32 bytes (openssl rand -hex 32); required with redis_url
    secret: _Str = ""


SUMMARY_ENGINES = ("embedded", "openai")


@dataclass(frozen=True, config=_SECTION)
class SummaryConfig:
    """The agent briefing on ``incoming_call`` (hitl_sip/hub/summary.py)."""

    # "embedded": extractive, offline; "openai": any OpenAI-compatible chat-completions
    # endpoint, with the embedded summary as the fallback
    engine: _Str = "embedded"
    url: _Str = ""  # the API base: POST {url}/chat/completions (e.g. https://api.openai.com/v1)
    model: _Str = ""
    api_key: _Str = ""  # sent only as "Authorization: Bearer"; prefer HITL_SIP_SUMMARY_API_KEY
    budget: _Float = 0.3  # seconds after the handoff the first ring may wait for the endpoint
    timeout: _Float = 5.0  # the endpoint's whole request, seconds (late: serves later rings)


@dataclass(frozen=True, config=_SECTION)
class CarrierConfig:
    """Voice webhooks for phone numbers on Twilio / Vonage (hitl_sip/hub/carrier.py). Each
    carrier's routes exist only when its secret is set; the secrets stay in the hub."""

    # the hub's base URL as the carrier calls it (behind a proxy: the public one), e.g.
    # https://hub.example.com; Twilio signs the URL it calls, so its webhook needs it
    public_url: _Str = ""
    # our SIP URI the carrier dials (sip:host[:port][;transport=tcp], no user: the dialled
    # number goes there); "" = sip:<profile [nat] public_address>:<sip.port>
    sip_uri: _Str = ""
    # out of the repr: a logged configuration never shows them
    twilio_auth_token: _Str = field(default="", repr=False)  # HITL_SIP_CARRIER_TWILIO_AUTH_TOKEN
    vonage_signature_secret: _Str = field(default="", repr=False)  # ..._VONAGE_SIGNATURE_SECRET
    # carrier call control (hitl_sip/hub/carrier_control.py): an agent's transfer to a phone
    # number, and hanging up the carrier's leg, through the carrier's REST API; the hub's
    # alone (never given to workers). Twilio: the account SID (AC…) with twilio_auth_token.
    twilio_account_sid: _Str = ""
    twilio_api_url: _Str = "https://api.twilio.com"  # another base: a stand-in in tests
    # Vonage Voice API: the application's id and its private key (a PEM file, 0600)
    vonage_application_id: _Str = ""
    vonage_private_key_path: _Str = field(default="", repr=False)
    vonage_api_url: _Str = "https://api.nexmo.com"  # https only (the vonage SDK's)
    # seconds a REFER to the trunk waits for the carrier's final NOTIFY (the number answers)
    refer_timeout: _Float = 60.0


@dataclass(frozen=True, config=_SECTION)
class LogConfig:
    level: _Str = "info"
    sip_trace: _Bool = False


@dataclass(frozen=True, config=_SECTION)
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
    summary: SummaryConfig = field(default_factory=SummaryConfig)
    carrier: CarrierConfig = field(default_factory=CarrierConfig)
    data_dir: _Str = "data"
    profiles_dir: _Str = str(PROJECT_ROOT / "sip_profiles")
    # days recordings, call records and local threads are kept (swept hourly by the hub)
    retention_days: _Int = 30

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
    "summary": SummaryConfig,
    "carrier": CarrierConfig,
}
_TOP_LEVEL = ("data_dir", "profiles_dir", "retention_days")
# Environment names read when the HITL_SIP_* form of their key is not set.
_ENV_FALLBACKS = (("AZURE_SPEECH_KEY", "speech.azure_key"),
                  ("AZURE_SPEECH_REGION", "speech.azure_region"))

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


def env_key(dotted: str) -> str:
    return "HITL_SIP_" + dotted.upper().replace(".", "_")


def _all_keys() -> list[str]:
    keys = list(_TOP_LEVEL)
    for section, cls in _SECTIONS.items():
        keys.extend(f"{section}.{f.name}" for f in fields(cls))
    return keys


def _nest(items: Mapping[str, Any]) -> dict[str, Any]:
    """``{"sip.port": v}`` -> ``{"sip": {"port": v}}``: the shape the layers merge in."""
    nested: dict[str, Any] = {}
    for key, value in items.items():
        section, dot, name = key.partition(".")
        if not dot:
            nested[key] = value
            continue
        table = nested.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(section, "unknown configuration key")
        table[name] = value
    return nested


class _EnvSource(PydanticBaseSettingsSource):
    """The ``HITL_SIP_*`` layer, read from the mapping ``load_config`` was given."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self._env = env

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ reads every key at once

    def __call__(self) -> dict[str, Any]:
        env = self._env
        found = {key: env[env_key(key)] for key in _all_keys() if env_key(key) in env}
        for alias, key in _ENV_FALLBACKS:
            if alias in env and env_key(key) not in env:
                found[key] = env[alias]
        return _nest(found)


# The file and environment of the load_config call under way (settings sources are chosen
# by a classmethod, so they reach it through here).
_LAYERS: ContextVar[tuple[Path | None, Mapping[str, str]]] = ContextVar(
    "_LAYERS", default=(None, MappingProxyType({})))


class _Layers(BaseSettings):
    """Flags (init arguments) over ``HITL_SIP_*`` over the TOML file over the defaults."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True, case_sensitive=True)

    sip: SipConfig = Field(default_factory=SipConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    bot: BotConfig = Field(default_factory=BotConfig)
    speech: SpeechConfig = Field(default_factory=SpeechConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    webrtc: WebRtcConfig = Field(default_factory=WebRtcConfig)
    alive5: Alive5Config = Field(default_factory=Alive5Config)
    front: FrontConfig = Field(default_factory=FrontConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    summary: SummaryConfig = Field(default_factory=SummaryConfig)
    carrier: CarrierConfig = Field(default_factory=CarrierConfig)
    data_dir: _Str = Config.data_dir
    profiles_dir: _Str = Config.profiles_dir
    retention_days: _Int = Config.retention_days

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        file, env = _LAYERS.get()
        sources: list[PydanticBaseSettingsSource] = [init_settings, _EnvSource(settings_cls, env)]
        if file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=file))
        return tuple(sources)


def _config_error(error: ValidationError) -> ConfigError:
    """The first error pydantic found, as a ConfigError naming its dotted key."""
    first = error.errors(include_url=False)[0]
    loc = [str(part) for part in first["loc"]]
    key = ".".join(loc)
    if first["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        cls = _SECTIONS.get(loc[0])
        if cls is not None and len(loc) == 2:
            known = ", ".join(f.name for f in fields(cls))
            return ConfigError(key, f"unknown key; known keys in [{loc[0]}]: {known}")
        value = first["input"]
        if len(loc) == 1 and isinstance(value, Mapping) and value:
            key = f"{key}.{next(iter(value))}"  # an unknown [table]: name its first key
        return ConfigError(key, "unknown configuration key")
    if len(loc) == 1 and loc[0] in _SECTIONS:  # a value where a [table] belongs
        return ConfigError(key, "unknown configuration key")
    return ConfigError(key, first["msg"])


def load_config(
    file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build a validated :class:`Config` from the layers (file < env < overrides)."""
    path = None if file is None else Path(file)
    if path is not None and not path.is_file():
        raise ConfigError("config", f"file not found: {path}")
    flags = _nest({key: raw for key, raw in (overrides or {}).items() if raw is not None})
    token = _LAYERS.set((path, os.environ if env is None else env))
    try:
        layers = _Layers(**flags)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("config", f"{path}: invalid TOML: {e}") from e
    except ValidationError as e:
        raise _config_error(e) from e
    finally:
        _LAYERS.reset(token)
    config = Config(**{f.name: getattr(layers, f.name) for f in fields(Config)})
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
            raise ConfigError("sip.transports",
                              f"unknown transport {t!r}; allowed: {', '.join(TRANSPORTS)}")
    _validate_tls(config)
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
    if w.record_format not in ("wav", "flac", "opus"):
        raise ConfigError("worker.record_format", "expected wav, flac or opus")
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
    if config.speech.stt_speed not in STT_SPEEDS:
        raise ConfigError("speech.stt_speed", f"expected one of {', '.join(STT_SPEEDS)}")
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
    if not config.routing.dispositions or any(
            not d or len(d) > 64 for d in config.routing.dispositions):
        raise ConfigError("routing.dispositions", "expected names of 1 to 64 characters")
    if not config.routing.queues or any(not q or len(q) > 64 for q in config.routing.queues):
        raise ConfigError("routing.queues", "expected names of 1 to 64 characters")
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
    if not 0 <= a5.orphan_grace <= 600:
        raise ConfigError("alive5.orphan_grace", "expected 0..600 seconds")
    if not 0.5 <= a5.ack_timeout <= 120:
        raise ConfigError("alive5.ack_timeout", "expected 0.5..120 seconds")
    if not 0.5 <= a5.max_backoff <= 600:
        raise ConfigError("alive5.max_backoff", "expected 0.5..600 seconds")
    _validate_summary(config.summary)
    _validate_carrier(config.carrier)
    _validate_carrier_control(config)
    _validate_front(config)
    url = config.cluster.redis_url
    if url and not url.startswith(("redis://", "rediss://", "unix://")):
        # the URL itself may carry the Redis password: name only what is wrong with it
        scheme = url.partition("://")[0] if "://" in url else ""
        shown = f"a {scheme!r} URL" if scheme.isalnum() and len(scheme) <= 16 else "no scheme"
        raise ConfigError("cluster.redis_url", "expected redis://, rediss:// or unix:// "
                          f"(e.g. redis://host:port/db), got {shown}")
    if url and not config.cluster.secret:
        raise ConfigError("cluster.secret", "hubs sharing Redis seal what they exchange: set "
                          "the same secret on every hub (HITL_SIP_CLUSTER_SECRET, e.g. "
                          "openssl rand -hex 32)")
    if config.cluster.secret:
        try:
            parse_secret(config.cluster.secret)
        except ValueError as e:
            raise ConfigError("cluster.secret", str(e)) from None
    h = config.http
    if bool(h.tls_certificate) != bool(h.tls_private_key):
        raise ConfigError("http.tls_private_key" if h.tls_certificate else
                          "http.tls_certificate", "give both the certificate and its key")
    if h.internal_port == h.port and h.port and h.internal_host == h.host:
        raise ConfigError("http.internal_port", "must differ from http.port")
    if not 1 <= config.retention_days <= 3650:
        raise ConfigError("retention_days", "expected 1..3650 days")
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
            f"the SIP front needs Kamailio, and {f.kamailio!r} is not installed (Debian: "
            "apt-get install kamailio; `make run` installs it); or, for a lab on loopback "
            "only, set front.mode = none",
        )
    _check_host("front.worker_host", f.worker_host)
    if f.worker_base_port and not 1024 <= f.worker_base_port <= 65535 - config.worker.count:
        raise ConfigError("front.worker_base_port", "expected 0 or a port 1024..65535")
    if not 1 <= f.probe_interval <= 300:
        raise ConfigError("front.probe_interval", "expected 1..300 seconds")
    if not 1 <= f.pike_window <= 60:
        raise ConfigError("front.pike_window", "expected 1..60 seconds")
    if not 2 <= f.pike_density <= 100000:
        raise ConfigError("front.pike_density", "expected 2..100000 requests per window")
    if not 1 <= f.trunk_rate <= 100000:
        raise ConfigError("front.trunk_rate", "expected 1..100000 INVITEs per second")
    if not 1 <= f.children <= 64:
        raise ConfigError("front.children", "expected 1..64")
    if f.media not in MEDIA_PATHS:
        raise ConfigError("front.media", f"expected rtpengine or direct, got {f.media!r}")
    if uses_rtpengine(config) and not shutil.which(f.rtpengine):
        raise ConfigError(
            "front.media",
            f"front.media = rtpengine needs {f.rtpengine!r}, which is not installed (Debian: "
            "apt-get install rtpengine-daemon; `make run` installs it); or, for a lab on "
            "loopback only, set front.media = direct",
        )
    if f.media_host:
        _check_host("front.media_host", f.media_host)
    for key in ("worker_rtp_port_start", "worker_rtp_port_end"):
        if not 1024 <= getattr(f, key) <= 65535:
            raise ConfigError(f"front.{key}", f"expected a port 1024..65535, got {getattr(f, key)}")
    if f.worker_rtp_port_end - f.worker_rtp_port_start + 1 < 8 * config.worker.count:
        raise ConfigError("front.worker_rtp_port_end",
                          "expected at least 8 ports per worker above front.worker_rtp_port_start")


def _url_fault(url: str, schemes: tuple[str, ...] = ("http", "https")) -> str | None:
    """What is wrong with ``url`` as a service's base URL: ``form`` (not one of ``schemes``
    with a host), ``extras`` (credentials, a query or a fragment), or nothing."""
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        return "form"
    if parts.username or parts.password or parts.query or parts.fragment:
        return "extras"
    return None


def _validate_summary(s: SummaryConfig) -> None:
    """The messages never quote the URL or the key (either may carry a secret)."""
    if s.engine not in SUMMARY_ENGINES:
        raise ConfigError("summary.engine", f"expected one of {', '.join(SUMMARY_ENGINES)}")
    fault = _url_fault(s.url) if s.url else None
    if fault == "form":
        raise ConfigError("summary.url", "expected an http(s) URL, the API base "
                          "(e.g. https://api.openai.com/v1)")
    if fault == "extras":
        raise ConfigError("summary.url", "expected a plain API base without credentials, "
                          "query or fragment (the key goes in summary.api_key)")
    if s.engine == "openai":
        if not s.url:
            raise ConfigError("summary.url", "summary.engine = openai needs the endpoint's "
                              "API base (e.g. https://api.openai.com/v1)")
        if not s.model:
            raise ConfigError("summary.model", "summary.engine = openai needs a model name")
    if not 0 <= s.budget <= 10:
        raise ConfigError("summary.budget", "expected 0..10 seconds")
    if not 0.1 <= s.timeout <= 120:
        raise ConfigError("summary.timeout", "expected 0.1..120 seconds")


CARRIER_SECRET_MIN = 16
SIP_URI_MAX = 255  # Twilio's limit for a <Sip> URI (the headers after it are counted apart)


def _validate_carrier(c: CarrierConfig) -> None:
    """The messages never quote a secret."""
    for key, secret in (("twilio_auth_token", c.twilio_auth_token),
                        ("vonage_signature_secret", c.vonage_signature_secret)):
        if secret and (len(secret) < CARRIER_SECRET_MIN or any(ch.isspace() for ch in secret)):
            raise ConfigError(f"carrier.{key}", f"expected the secret as the carrier's console "
                              f"shows it: at least {CARRIER_SECRET_MIN} characters, no spaces")
    if c.public_url:
        fault = _url_fault(c.public_url)
        if fault == "form":
            raise ConfigError("carrier.public_url", "expected the hub's base URL as the carrier "
                              "calls it, e.g. https://hub.example.com")
        if fault == "extras":
            raise ConfigError("carrier.public_url", "expected a plain base URL without "
                              "credentials, query or fragment")
    elif c.twilio_auth_token:
        raise ConfigError("carrier.public_url", "Twilio signs the URL it calls: set the hub's "
                          "public base URL (e.g. https://hub.example.com) to check it")
    if c.sip_uri:
        try:
            uri = SipUri.parse(c.sip_uri)
        except ValueError as e:
            raise ConfigError("carrier.sip_uri", f"expected sip:host[:port]: {e}") from e
        if uri.scheme != "sip" or uri.headers or "?" in c.sip_uri:
            raise ConfigError("carrier.sip_uri", "expected a sip: URI without headers "
                              "(carriers dial sip:, with ;transport=tls for TLS)")
        if len(c.sip_uri) > SIP_URI_MAX - 40:
            raise ConfigError("carrier.sip_uri", f"expected at most {SIP_URI_MAX - 40} "
                              "characters (the dialled number goes before the host)")


def _validate_carrier_control(config: Config) -> None:
    """The REST API credentials of carrier call control; the messages quote no secret."""
    c = config.carrier
    sid = c.twilio_account_sid
    if sid:
        if len(sid) != 34 or not sid.startswith("AC") or any(
                ch not in "0123456789abcdefABCDEF" for ch in sid[2:]):
            raise ConfigError("carrier.twilio_account_sid", "expected the account SID as "
                              "Twilio's console shows it: AC and 32 hexadecimal digits")
        if not c.twilio_auth_token:
            raise ConfigError("carrier.twilio_auth_token", "Twilio's REST API "
                              "(carrier.twilio_account_sid) needs the account's Auth Token")
    if bool(c.vonage_application_id) != bool(c.vonage_private_key_path):
        key = "vonage_private_key_path" if c.vonage_application_id else "vonage_application_id"
        raise ConfigError(f"carrier.{key}", "Vonage's Voice API needs both the application "
                          "id and the path of its private key (PEM)")
    if c.vonage_application_id and any(ch.isspace() or ch in "/?#" for ch in
                                       c.vonage_application_id):
        raise ConfigError("carrier.vonage_application_id", "expected the application id "
                          "(a UUID) as Vonage's dashboard shows it")
    if c.vonage_private_key_path:
        path = config.resolve_path(c.vonage_private_key_path)
        if not path.is_file() or not os.access(path, os.R_OK):
            raise ConfigError("carrier.vonage_private_key_path",
                              f"not a readable file: {c.vonage_private_key_path}")
    for key, url, schemes in (("twilio_api_url", c.twilio_api_url, ("http", "https")),
                              ("vonage_api_url", c.vonage_api_url, ("https",))):
        if _url_fault(url, schemes) or urlsplit(url).path.strip("/"):
            raise ConfigError(f"carrier.{key}", f"expected a base URL ({' or '.join(schemes)}"
                              "://host[:port], no path, query or credentials)")
    if not 1 <= c.refer_timeout <= 600:
        raise ConfigError("carrier.refer_timeout", "expected 1..600 seconds")


def _validate_tls(config: Config) -> None:
    sip = config.sip
    _check_port("sip.tls_port", sip.tls_port)
    if bool(sip.tls_certificate) != bool(sip.tls_private_key):
        key = "sip.tls_private_key" if sip.tls_certificate else "sip.tls_certificate"
        raise ConfigError(key, "set both sip.tls_certificate and sip.tls_private_key, or "
                          "neither (a self-signed pair is then made under the data directory)")
    for key, path in (("sip.tls_certificate", sip.tls_certificate),
                      ("sip.tls_private_key", sip.tls_private_key)):
        if path and not config.resolve_path(path).is_file():
            raise ConfigError(key, f"file not found: {path}")
    if "tls" not in sip.transports:
        return
    if config.front.mode == "none":
        raise ConfigError("sip.transports", "tls is served by the SIP front (Kamailio): it "
                          "needs front.mode auto or kamailio, not none")
    if sip.tls_port and sip.tls_port == sip.port and "tcp" in sip.transports:
        raise ConfigError("sip.tls_port", f"TCP and TLS cannot share port {sip.port}")


def worker_transports(config: Config) -> tuple[str, ...]:
    """The transports a worker listens on: TLS ends at the front, which talks to the workers
    over UDP (or TCP when UDP is off)."""
    return tuple(t for t in config.sip.transports if t != "tls") or ("udp",)


def uses_front(config: Config) -> bool:
    """Whether ``serve`` puts Kamailio before the workers."""
    return config.front.mode != "none"


MEDIA_PATHS = ("rtpengine", "direct")


def uses_rtpengine(config: Config) -> bool:
    """Whether the trunk's media passes rtpengine before the workers (only with the front:
    ``front.mode = none`` keeps direct media)."""
    return uses_front(config) and config.front.media == "rtpengine"


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
