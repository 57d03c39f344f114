"""Trunk profiles: the shipped files load; every invalid field is a ConfigError naming its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from hitl_sip.errors import ConfigError
from hitl_sip.sip.digest import AuthStatus, DigestAuthenticator
from hitl_sip.sip.profile import (
    AUTH_USERS_ENV,
    PASSWORD_ENV,
    Codec,
    Srtp,
    TransferSettings,
    TrunkProfile,
    load_profile,
    parse_profile,
)

PROFILES = Path(__file__).parents[2] / "sip_profiles"
SHIPPED = sorted(PROFILES.glob("*.toml"))
SECTIONS = ("allow", "auth", "register", "codecs", "nat", "rtp", "headers", "numbers", "dtmf",
            "transfer")
SECRET = b"test-secret-0123456789"


def test_the_four_profiles_are_shipped() -> None:
    assert {p.stem for p in SHIPPED} >= {"local", "twilio", "vonage", "generic"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_profile_loads_by_name_and_by_path(path: Path) -> None:
    by_name = load_profile(path.stem, PROFILES, env={})
    by_path = load_profile(str(path), Path("/nonexistent"), env={})

    assert by_name.name == path.stem
    assert by_name == by_path
    assert by_name.source == path


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_profile_documents_each_section_in_its_header(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    first_code = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    header = "\n".join(lines[:first_code])

    for section in SECTIONS:
        assert f"[{section}]" in header, section


def test_local_profile_admits_loopback_and_private_lan_only() -> None:
    p = load_profile("local", PROFILES, env={})

    assert p.allow_list.allows("127.0.0.1")
    assert p.allow_list.allows("::1")
    assert p.allow_list.allows("192.168.1.10")
    assert p.allow_list.allows("10.20.30.40")
    assert not p.allow_list.allows("8.8.8.8")
    assert not p.allow_list.allows("54.172.60.1")
    assert p.codecs == (Codec.PCMU, Codec.PCMA, Codec.G722)
    assert (p.rtp.start, p.rtp.end) == (20000, 20999)
    assert p.rtp.slots == 250
    assert p.authenticator(SECRET) is None


def test_twilio_profile() -> None:
    p = load_profile("twilio", PROFILES, env={})

    assert p.allow_list.allows("54.172.60.2")
    assert p.allow_list.allows("177.71.206.193")
    assert not p.allow_list.allows("54.172.60.4")
    assert not p.allow_list.allows("127.0.0.1")
    assert p.codecs == (Codec.PCMU, Codec.PCMA)
    assert not p.auth.enabled
    assert not p.register.enabled
    assert p.header_mapping.key_for("X-Twilio-CallSid") == "twilio_call_sid"
    assert p.header_mapping.key_for("identity") == "stir_identity"


def test_vonage_profile() -> None:
    p = load_profile("vonage", PROFILES, env={})

    assert p.allow_list.allows("216.147.10.1")
    assert p.allow_list.allows("168.100.100.1")
    assert p.codecs == (Codec.PCMA, Codec.PCMU, Codec.G722)
    assert not p.register.enabled
    assert p.header_mapping.key_for("X-Vonage-Anything") == "X-Vonage-Anything"


def test_generic_profile_allows_nothing() -> None:
    p = load_profile("generic", PROFILES, env={})

    assert not p.allow_list.allow_any
    assert not p.allow_list.allows("127.0.0.1")
    assert not p.allow_list.allows("54.172.60.1")


def test_defaults_for_a_minimal_profile() -> None:
    p = parse_profile('name = "x"', env={})

    assert p == TrunkProfile(name="x")
    assert not p.allow_list.allows("127.0.0.1")
    assert p.default_country_code is None
    assert p.public_address is None


def test_authenticator_when_auth_is_enabled() -> None:
    p = parse_profile(
        'name = "x"\n[auth]\nenabled = true\nrealm = "pbx"\nusers = { trunk = "pw" }', env={}
    )

    auth = p.authenticator(SECRET)

    assert isinstance(auth, DigestAuthenticator)
    assert auth.realm == "pbx"
    assert auth.verify("INVITE", None).status is AuthStatus.MISSING


def test_auth_users_from_env_replace_the_table() -> None:
    text = 'name = "x"\n[auth]\nenabled = true\nusers = { old = "pw" }'

    p = parse_profile(text, env={AUTH_USERS_ENV: "u1:p1, u2:p:2,"})

    assert dict(p.auth.users) == {"u1": "p1", "u2": "p:2"}


def test_passwords_stay_out_of_repr() -> None:
    p = parse_profile(
        'name = "x"\n[auth]\nenabled = true\nusers = { trunk = "hunter2" }\n'
        '[register]\nenabled = true\nregistrar = "sip:sip.nexmo.com"\nusername = "key"\n'
        'password = "hunter3"',
        env={},
    )

    assert "hunter2" not in repr(p)
    assert "hunter3" not in repr(p)


def test_register_password_from_env_and_derived_aor() -> None:
    text = (
        'name = "x"\n[register]\nenabled = true\nregistrar = "sip:sip.nexmo.com"\n'
        'username = "apikey"\npassword = "in-file"'
    )

    p = parse_profile(text, env={PASSWORD_ENV: "from-env"})

    assert p.register.password == "from-env"
    assert p.register.aor == "sip:apikey@sip.nexmo.com"
    assert parse_profile(text, env={}).register.password == "in-file"


def test_codecs_are_case_insensitive() -> None:
    p = parse_profile('name = "x"\n[codecs]\norder = ["pcma", "g722"]', env={})

    assert p.codecs == (Codec.PCMA, Codec.G722)


def test_public_address_accepts_ip_or_host() -> None:
    ip = parse_profile('name = "x"\n[nat]\npublic_address = "203.0.113.7"', env={})
    host = parse_profile('name = "x"\n[nat]\npublic_address = "SIP.Example.com"', env={})

    assert ip.public_address == "203.0.113.7"
    assert host.public_address == "sip.example.com"


def test_srtp_is_off_unless_the_profile_asks_for_it() -> None:
    assert parse_profile('name = "x"', env={}).srtp is Srtp.OFF
    for value, policy in (("off", Srtp.OFF), ("optional", Srtp.OPTIONAL),
                          ("Mandatory", Srtp.MANDATORY)):
        p = parse_profile(f'name = "x"\n[rtp]\nsrtp = "{value}"', env={})
        assert p.srtp is policy
        assert (p.rtp.start, p.rtp.end) == (10000, 20000)  # the range is untouched


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_profiles_leave_srtp_off_and_document_it(path: Path) -> None:
    # a carrier's secure trunking is switched on at both ends: the default is plain RTP
    assert load_profile(path.stem, PROFILES, env={}).srtp is Srtp.OFF
    header = path.read_text(encoding="utf-8").split("\nname = ", 1)[0]
    assert "srtp" in header


def test_country_code_with_plus_is_accepted() -> None:
    p = parse_profile('name = "x"\n[numbers]\ndefault_country_code = "+44"', env={})

    assert p.default_country_code == "44"


@pytest.mark.parametrize(
    ("toml", "key", "message"),
    [
        ("", "profile.name", "required"),
        ('name = "bad name"', "profile.name", "letters, digits"),
        ("name = 3", "profile.name", "must be a string"),
        ('name = "x"\ncolour = "red"', "profile.colour", "unknown key"),
        ('name = "x"\nallow = 1', "profile.allow", "must be a table"),
        ('name = "x"\n[allow]\ncidr = []', "profile.allow.cidr", "unknown key; allowed: cidrs"),
        (
            'name = "x"\n[allow]\ncidrs = ["10.0.0.0/8", "1.2.3.0/24", "1.2.3.4/24"]',
            "profile.allow.cidrs[2]",
            "host bits",
        ),
        ('name = "x"\n[allow]\ncidrs = ["nope"]', "profile.allow.cidrs[0]", "invalid CIDR"),
        ('name = "x"\n[allow]\ncidrs = [1]', "profile.allow.cidrs[0]", "must be a string"),
        ('name = "x"\n[allow]\ncidrs = "10.0.0.0/8"', "profile.allow.cidrs", "must be a list"),
        ('name = "x"\n[allow]\nallow_any = "yes"', "profile.allow.allow_any", "true or false"),
        ('name = "x"\n[auth]\nenabled = true', "profile.auth.users", "no users"),
        ('name = "x"\n[auth]\nrealm = ""', "profile.auth.realm", "non-empty"),
        ('name = "x"\n[auth]\nusers = { a = "" }', "profile.auth.users.a", "must not be empty"),
        ('name = "x"\n[auth]\nusers = { a = 1 }', "profile.auth.users.a", "must be a string"),
        ('name = "x"\n[auth]\nusers = { "a:b" = "p" }', "profile.auth.users.a:b", "':'"),
        ('name = "x"\n[auth]\nuser = {}', "profile.auth.user", "unknown key"),
        (
            'name = "x"\n[register]\nenabled = true\nusername = "u"\npassword = "p"',
            "profile.register.registrar",
            "required when register is enabled",
        ),
        (
            'name = "x"\n[register]\nenabled = true\nregistrar = "sip:r.example"\npassword = "p"',
            "profile.register.username",
            "required",
        ),
        (
            'name = "x"\n[register]\nenabled = true\nregistrar = "sip:r.example"\nusername = "u"',
            "profile.register.password",
            PASSWORD_ENV,
        ),
        (
            'name = "x"\n[register]\nregistrar = "http://r.example"',
            "profile.register.registrar",
            "sip: or sips: URI",
        ),
        (
            'name = "x"\n[register]\nregistrar = "tel:+123456789"',
            "profile.register.registrar",
            "sip: or sips: URI",
        ),
        ('name = "x"\n[register]\naor = "sip:r.example"', "profile.register.aor", "user part"),
        ('name = "x"\n[register]\nexpires = 10', "profile.register.expires", "60–86400"),
        (
            'name = "x"\n[register]\nretry_interval = 0',
            "profile.register.retry_interval",
            "5–3600",
        ),
        ('name = "x"\n[register]\nexpires = "300"', "profile.register.expires", "an integer"),
        ('name = "x"\n[register]\nexpires = true', "profile.register.expires", "an integer"),
        ('name = "x"\n[register]\nproxy = ""', "profile.register.proxy", "unknown key"),
        ('name = "x"\n[codecs]\norder = []', "profile.codecs.order", "at least one"),
        (
            'name = "x"\n[codecs]\norder = ["PCMU", "OPUS"]',
            "profile.codecs.order[1]",
            "allowed: PCMU, PCMA, G722",
        ),
        (
            'name = "x"\n[codecs]\norder = ["PCMU", "pcmu"]',
            "profile.codecs.order[1]",
            "listed twice",
        ),
        (
            'name = "x"\n[nat]\npublic_address = "1.2.3.4:5060"',
            "profile.nat.public_address",
            "host",
        ),
        ('name = "x"\n[nat]\npublic_address = "0.0.0.0"', "profile.nat.public_address", "unspec"),
        ('name = "x"\n[nat]\npublic_ip = ""', "profile.nat.public_ip", "unknown key"),
        ('name = "x"\n[rtp]\nport_start = 80', "profile.rtp.port_start", "1024–65535"),
        ('name = "x"\n[rtp]\nport_end = 70000', "profile.rtp.port_end", "1024–65535"),
        (
            'name = "x"\n[rtp]\nport_start = 20000\nport_end = 10000',
            "profile.rtp.port_end",
            "port_start + 3",
        ),
        (
            'name = "x"\n[rtp]\nport_start = 20000\nport_end = 20002',
            "profile.rtp.port_end",
            "4 ports",
        ),
        ('name = "x"\n[rtp]\nport_start = 1.5', "profile.rtp.port_start", "an integer"),
        ('name = "x"\n[rtp]\nsrtp = "required"', "profile.rtp.srtp",
         'allowed: "off", "optional", "mandatory"'),
        ('name = "x"\n[rtp]\nsrtp = true', "profile.rtp.srtp", "must be a string"),
        ('name = "x"\n[rtp]\nsrtp_suites = []', "profile.rtp.srtp_suites", "unknown key"),
        (
            'name = "x"\n[headers]\nmap = { "X-A" = "Bad-Key" }',
            "profile.headers.map.X-A",
            "snake_case",
        ),
        (
            'name = "x"\n[headers]\nmap = { "X A" = "a" }',
            "profile.headers.map.X A",
            "SIP token",
        ),
        (
            'name = "x"\n[headers]\nmap = { "X-A" = "a", "x-a" = "b" }',
            "profile.headers.map.x-a",
            "listed twice",
        ),
        ('name = "x"\n[headers]\nprefixes = [""]', "profile.headers.prefixes[0]", "prefix"),
        ('name = "x"\n[headers]\npassthrough = true', "profile.headers.passthrough", "unknown"),
        (
            'name = "x"\n[numbers]\ndefault_country_code = "01"',
            "profile.numbers.default_country_code",
            "1–3 digits",
        ),
        (
            'name = "x"\n[numbers]\ndefault_country_code = 1',
            "profile.numbers.default_country_code",
            "must be a string",
        ),
        ('name = "x"\n[dtmf]\npayload_types = [101, 13]', "profile.dtmf.payload_types[1]", "96"),
        ('name = "x"\n[dtmf]\npayload_types = [true]', "profile.dtmf.payload_types[0]", "96"),
        ('name = "x"\n[dtmf]\npt = 101', "profile.dtmf.pt", "unknown key"),
        ('name = "x"\n[allow', "profile", "invalid TOML"),
    ],
)
def test_invalid_field_names_its_key(toml: str, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_profile(toml, env={})

    assert info.value.key == key
    assert message in info.value.message


@pytest.mark.parametrize(
    "value",
    ["Secr3tPW", "u:", ":Secr3tPW", "u:Secr3tPW,u:Secr3tPW", "u\x01:Secr3tPW"],
    ids=["no-colon", "no-pw", "no-user", "repeat", "control-char"],
)
def test_bad_auth_users_env_names_the_variable_not_the_password(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_profile('name = "x"', env={AUTH_USERS_ENV: value})

    assert info.value.key == f"env.{AUTH_USERS_ENV}"
    assert "Secr3tPW" not in str(info.value)


def test_missing_profile_file() -> None:
    with pytest.raises(ConfigError, match="profile file not found") as info:
        load_profile("nosuch", PROFILES, env={})

    assert info.value.key == "profile"


def test_invalid_toml_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('name = "x"\n[rtp\n', encoding="utf-8")

    with pytest.raises(ConfigError, match=r"broken\.toml: invalid TOML"):
        load_profile(str(path), PROFILES, env={})


def test_a_path_outside_the_profiles_dir(tmp_path: Path) -> None:
    path = tmp_path / "carrier.toml"
    path.write_text('name = "carrier"\n[allow]\ncidrs = ["203.0.113.0/24"]\n', encoding="utf-8")

    p = load_profile(str(path), PROFILES, env={})

    assert p.name == "carrier"
    assert p.allow_list.allows("203.0.113.50")


def test_transfer_by_refer_is_off_unless_the_profile_says_the_carrier_takes_it() -> None:
    for path in SHIPPED:
        assert load_profile(str(path), PROFILES, env={}).transfer == TransferSettings()
    on = parse_profile('name = "x"\n[transfer]\nrefer = true\nrefer_host = "Example.PSTN.'
                       'twilio.com"\n')
    assert on.transfer == TransferSettings(refer=True, refer_host="example.pstn.twilio.com")
    for host in ("203.0.113.7:5060", "[2001:db8::1]:5061"):
        text = f'name = "x"\n[transfer]\nrefer_host = "{host}"\n'
        assert parse_profile(text).transfer.refer_host == host


@pytest.mark.parametrize(("body", "key"), [
    ('refer = "yes"', "profile.transfer.refer"),
    ('refer_host = "user@host"', "profile.transfer.refer_host"),
    ('refer_host = "host;transport=tcp"', "profile.transfer.refer_host"),
    ('refer_host = "host:0"', "profile.transfer.refer_host"),
    ('refer_host = "bad_host!"', "profile.transfer.refer_host"),
    ('refer_to = "x"', "profile.transfer.refer_to"),
])
def test_a_bad_transfer_section_names_its_key(body: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_profile(f'name = "x"\n[transfer]\n{body}\n')
    assert info.value.key == key
