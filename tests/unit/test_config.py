"""Configuration layering and validation: every bad value names its key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from hitl_sip.config import (
    MAX_ADMITTED_CALLS_PER_WORKER,
    Config,
    config_from_dict,
    env_key,
    load_config,
    worker_transports,
)
from hitl_sip.errors import ConfigError


def test_embedded_defaults_are_valid_without_any_file_or_env() -> None:
    config = load_config(None, env={})
    assert config.sip.port == 5060
    assert config.sip.profile == "local"
    assert config.worker.max_calls == MAX_ADMITTED_CALLS_PER_WORKER


def test_layers_apply_in_order_file_then_env_then_flags(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text('[sip]\nport = 5070\nhost = "127.0.0.1"\n[http]\nport = 9000\n')
    config = load_config(
        file,
        env={"HITL_SIP_SIP_PORT": "5080", "HITL_SIP_HTTP_PORT": "9001"},
        overrides={"http.port": "9002"},
    )
    assert config.sip.host == "127.0.0.1"
    assert config.sip.port == 5080
    assert config.http.port == 9002


def test_env_key_is_the_dotted_name_upper_cased() -> None:
    assert env_key("worker.max_calls") == "HITL_SIP_WORKER_MAX_CALLS"
    assert env_key("data_dir") == "HITL_SIP_DATA_DIR"


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"sip.port": "70000"}, "sip.port"),
        ({"sip.port": "five"}, "sip.port"),
        ({"sip.host": "example.com"}, "sip.host"),
        ({"sip.transports": "udp,sctp"}, "sip.transports"),
        ({"sip.tls_port": "65536"}, "sip.tls_port"),
        ({"sip.tls_certificate": "/etc/hostname"}, "sip.tls_private_key"),
        ({"sip.tls_private_key": "/etc/hostname"}, "sip.tls_certificate"),
        ({"sip.tls_certificate": "/no/such.crt", "sip.tls_private_key": "/etc/hostname"},
         "sip.tls_certificate"),
        ({"sip.tls_certificate": "/etc/hostname", "sip.tls_private_key": "/no/such.key"},
         "sip.tls_private_key"),
        ({"sip.transports": "udp,tls", "front.mode": "none"}, "sip.transports"),
        ({"sip.transports": "tcp,tls", "sip.port": "5061"}, "sip.tls_port"),
        ({"http.port": "-1"}, "http.port"),
        ({"worker.count": "0"}, "worker.count"),
        ({"worker.max_calls": "4"}, "worker.max_calls"),
        ({"worker.clock_rate": "44100"}, "worker.clock_rate"),
        ({"bot.flow": "no/such/flow.yaml"}, "bot.flow"),
        ({"bot.hold_audio": "no/such.wav"}, "bot.hold_audio"),
        ({"speech.stt": "whisper"}, "speech.stt"),
        ({"speech.tts": "say"}, "speech.tts"),
        ({"speech.stt_speed": "turbo"}, "speech.stt_speed"),
        ({"speech.tts": "azure"}, "speech.azure_key"),
        ({"routing.queue_timeout": "0"}, "routing.queue_timeout"),
        ({"api.keys": "short"}, "api.keys"),
        ({"worker.record_calls": "maybe"}, "worker.record_calls"),
        ({"log.level": "loud"}, "log.level"),
        ({"profiles_dir": "/no/such/dir"}, "profiles_dir"),
        ({"cluster.redis_url": "redis://127.0.0.1:6379/0"}, "cluster.secret"),
        ({"cluster.secret": "too-short"}, "cluster.secret"),
    ],
)
def test_invalid_values_raise_config_error_naming_the_key(
    overrides: dict[str, str], key: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={}, overrides=overrides)
    assert info.value.key == key


@pytest.mark.parametrize(
    ("url", "said"),
    [("http://:s3cret-pw@10.0.0.5:6379/0", "got a 'http' URL"),
     ("10.0.0.5:6379 s3cret-pw", "got no scheme"),
     ("s3cret-pw@x/y://z", "got no scheme")],
)
def test_a_wrong_redis_url_is_refused_without_quoting_its_password(url: str, said: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={}, overrides={"cluster.redis_url": url, "cluster.secret": "x"})
    assert info.value.key == "cluster.redis_url"
    assert said in str(info.value) and "s3cret" not in str(info.value)


def test_tls_is_a_transport_of_the_front_and_the_workers_stay_on_udp() -> None:
    config = load_config(None, env={}, overrides={"sip.transports": "udp,tcp,tls"})
    assert config.sip.transports == ("udp", "tcp", "tls")
    assert (config.sip.tls_port, config.sip.tls_certificate, config.sip.tls_private_key) == (
        5061, "", "")
    assert worker_transports(config) == ("udp", "tcp")
    only_tls = load_config(None, env={}, overrides={"sip.transports": "tls", "sip.port": "5061"})
    assert worker_transports(only_tls) == ("udp",)  # the front reaches them over UDP
    with pytest.raises(ConfigError, match="allowed: udp, tcp, tls"):
        load_config(None, env={}, overrides={"sip.transports": "wss"})


def test_max_calls_error_explains_the_compiled_pjsua_limit() -> None:
    with pytest.raises(ConfigError, match="PJSUA_MAX_CALLS=4"):
        load_config(None, env={}, overrides={"worker.max_calls": 10})


def test_unknown_keys_in_the_file_are_rejected(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text("[sip]\nprot = 5070\n")
    with pytest.raises(ConfigError) as info:
        load_config(file, env={})
    assert info.value.key == "sip.prot"


def test_unknown_section_is_rejected(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text("[sipp]\nport = 5070\n")
    with pytest.raises(ConfigError) as info:
        load_config(file, env={})
    assert info.value.key == "sipp.port"


def test_invalid_toml_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[sip\nport=1")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad, env={})
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.toml", env={})


def test_bad_env_value_names_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={"HITL_SIP_WORKER_RETRY_AFTER": "soon"})
    assert info.value.key == "worker.retry_after"


def test_config_round_trips_through_the_worker_hand_off() -> None:
    config = load_config(
        None, env={}, overrides={"sip.transports": "udp", "worker.max_calls": 2, "sip.port": 0}
    )
    again = config_from_dict(config.to_dict())
    assert again == config
    assert isinstance(again, Config)


def test_unknown_key_error_lists_the_known_keys_of_its_section(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text("[worker]\nmax_call = 2\n")
    with pytest.raises(ConfigError, match=r"known keys in \[worker\]: count, max_calls") as info:
        load_config(file, env={})
    assert info.value.key == "worker.max_call"


def test_a_boolean_is_not_taken_for_a_port(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text("[sip]\nport = true\n")
    with pytest.raises(ConfigError, match="expected an integer, got True") as info:
        load_config(file, env={})
    assert info.value.key == "sip.port"


def test_env_lists_are_comma_separated_and_stay_tuples() -> None:
    config = load_config(None, env={
        "HITL_SIP_API_KEYS": "k1-0123456789abcdef, k2-0123456789abcdef",
        "HITL_SIP_SIP_TRANSPORTS": "udp",
        "HITL_SIP_WORKER_RECORD_CALLS": "off",
    })
    assert config.api.keys == ("k1-0123456789abcdef", "k2-0123456789abcdef")
    assert config.sip.transports == ("udp",)
    assert config.worker.record_calls is False


def test_azure_speech_env_names_fill_in_unless_the_hitl_sip_form_is_set() -> None:
    config = load_config(None, env={
        "AZURE_SPEECH_KEY": "the-key",
        "AZURE_SPEECH_REGION": "westeurope",
        "HITL_SIP_SPEECH_AZURE_REGION": "eastus",
    })
    assert config.speech.azure_key == "the-key"
    assert config.speech.azure_region == "eastus"


def test_env_names_that_are_no_configuration_key_are_ignored() -> None:
    # HITL_SIP_WORKER_CONFIG is the hub's hand-off to its workers, not a worker.* key
    config = load_config(None, env={"HITL_SIP_WORKER_CONFIG": "{}", "HITL_SIP_NOPE": "1"})
    assert config == load_config(None, env={})


def test_sections_stay_frozen_dataclasses_for_replace() -> None:
    config = load_config(None, env={})
    changed = dataclasses.replace(config, http=dataclasses.replace(config.http, port=0))
    assert changed.http.port == 0
    assert config.http.port == 8080
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.http.port = 1  # type: ignore[misc]
