"""The CLI contract: every flag PROTOCOL.md §5 names, and every flag the README's
configuration table names, is accepted by ``hitl-sip serve`` and sets its key."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from hitl_sip.cli import _parser, main
from hitl_sip.config import FLAG_KEYS, Config, load_config

README = Path(__file__).parents[2] / "README.md"

# PROTOCOL.md §5: "At least: ..." (the contract independent clients are written from)
PROTOCOL_FLAGS = (
    "--sip-host", "--sip-port", "--http-host", "--http-port", "--workers", "--data-dir",
    "--profile", "--flow", "--stt", "--tts", "--alive5-url", "--alive5-api-key",
    "--alive5-channel-id",
)

# a valid value per key, so that the whole configuration still validates
VALUES: dict[str, str] = {
    "sip.host": "127.0.0.1", "sip.port": "5070", "http.host": "127.0.0.1",
    "http.port": "8090", "worker.count": "2", "worker.max_calls": "2", "data_dir": "d",
    "sip.profile": "twilio", "log.level": "debug", "bot.flow": "external",
    "speech.stt": "azure", "speech.tts": "azure",
    "alive5.url": "https://alive5.example/socket", "alive5.api_key": "k-123",
    "alive5.channel_id": "chan-7",
}

# what the flags above need beside them (a key for azure, an api key for alive5)
SUPPORTING_ENV = {"HITL_SIP_SPEECH_AZURE_KEY": "k", "HITL_SIP_SPEECH_AZURE_REGION": "westus",
                  "HITL_SIP_ALIVE5_API_KEY": "k-env"}


def table_flags() -> dict[str, str]:
    """flag → dotted key, from the README's configuration table ("`a.b` / `c`" rows name
    several keys of one section, paired in order with their flags)."""
    text = README.read_text()
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    pairs: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not cells[0].startswith("`"):
            continue
        keys = re.findall(r"`([^`]+)`", cells[0])
        flags = re.findall(r"`(--[a-z0-9-]+)`", cells[1])
        if not flags:
            continue
        prefix = keys[0].rsplit(".", 1)[0] + "." if "." in keys[0] else ""
        keys = [k if "." in k or not prefix else prefix + k for k in keys]
        assert len(keys) == len(flags), f"README row pairs keys and flags one to one: {line}"
        pairs.update(zip(flags, keys, strict=True))
    return pairs


def config_value(config: Config, dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def test_the_readme_table_names_every_protocol_flag() -> None:
    documented = table_flags()
    assert set(PROTOCOL_FLAGS) <= set(documented), set(PROTOCOL_FLAGS) - set(documented)


def test_every_flag_in_the_readme_table_is_a_serve_flag_for_its_key() -> None:
    documented = table_flags()
    accepted = {"--" + dest.replace("_", "-"): key for dest, key in FLAG_KEYS.items()}
    assert documented == accepted  # nothing documented is missing, nothing accepted undocumented
    for flag, key in documented.items():
        args = _parser().parse_args(["serve", flag, VALUES[key]])
        overrides = {k: getattr(args, dest) for dest, k in FLAG_KEYS.items()}
        config = load_config(None, overrides=overrides, env=SUPPORTING_ENV)
        expected = config_value(config, key)
        assert str(expected) == VALUES[key] or expected == int(VALUES[key]), (flag, expected)


def test_alive5_flags_set_the_connector_and_override_the_environment() -> None:
    args = _parser().parse_args(["serve", "--alive5-url", "http://127.0.0.1:9", "--alive5-api-key",
                                 "secret-1", "--alive5-channel-id", "c9"])
    overrides = {k: getattr(args, dest) for dest, k in FLAG_KEYS.items()}
    config = load_config(None, overrides=overrides,
                         env={"HITL_SIP_ALIVE5_URL": "http://127.0.0.1:1",
                              "HITL_SIP_ALIVE5_API_KEY": "from-env"})
    assert (config.alive5.url, config.alive5.api_key, config.alive5.channel_id) == (
        "http://127.0.0.1:9", "secret-1", "c9")


def test_an_alive5_url_without_a_key_is_a_configuration_error_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["serve", "--data-dir", str(tmp_path), "--alive5-url", "http://127.0.0.1:9"])
    assert code == 2
    err = capsys.readouterr().err
    assert "alive5.api_key" in err


def test_an_unknown_flag_is_refused_by_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(["serve", "--alive5-token", "x"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --alive5-token" in capsys.readouterr().err
