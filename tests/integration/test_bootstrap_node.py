"""scripts/node.sh, the bootstrap's choice of Node: a Node 18 first on PATH (Debian 12's own)
gets the pinned Node and npm installed into the prefix from the npm registry (a real download,
checked against the pinned sha512); a suitable Node first on PATH gets nothing installed; a
tampered tarball is refused before it is unpacked."""

from __future__ import annotations

import io
import os
import platform
import re
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NODE_SH = ROOT / "scripts" / "node.sh"
#: The environment node.sh reads; a test sets what it needs and nothing leaks in from outside.
OVERRIDES = (
    "HITL_SIP_NODE_PREFIX",
    "HITL_SIP_NPM_REGISTRY",
    "HITL_SIP_NODE_SHA512",
    "HITL_SIP_NPM_SHA512",
)
#: A download of ~55 MB and two unpacks; generous for a slow CI link.
TIMEOUT = 60.0


def _pinned(name: str) -> str:
    match = re.search(rf"^{name}=(\S+)$", NODE_SH.read_text(), re.MULTILINE)
    assert match, f"{name} is not pinned in {NODE_SH}"
    return match.group(1)


NODE_VERSION = _pinned("HITL_SIP_NODE_VERSION")
NPM_VERSION = _pinned("HITL_SIP_NPM_VERSION")


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _stub_node_18(directory: Path) -> Path:
    """Debian 12's Node as far as a version check can tell: `node` and `npm` that print the
    versions of nodejs 18.19.0 and npm 9.2.0 whatever they are asked."""
    directory.mkdir(parents=True, exist_ok=True)
    _script(directory / "node", "echo v18.19.0\n")
    _script(directory / "npm", "echo 9.2.0\n")
    return directory


def _env(first_on_path: Path, prefix: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in OVERRIDES}
    env["PATH"] = f"{first_on_path}{os.pathsep}{env.get('PATH', '')}"
    env["HITL_SIP_NODE_PREFIX"] = str(prefix)
    env.update(extra)
    return env


def _select(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(NODE_SH)],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def _version(text: str) -> tuple[int, int, int]:
    match = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)", text.strip())
    assert match, f"not a Node version: {text!r}"
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


class Installed:
    """The outcome of node.sh run with the Node 18 stub first on PATH."""

    def __init__(self, stubs: Path, prefix: Path, result: subprocess.CompletedProcess[str]):
        self.stubs = stubs
        self.prefix = prefix
        self.result = result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("node18")
    stubs = _stub_node_18(base / "stubs")
    prefix = base / "prefix"
    return Installed(stubs, prefix, _select(_env(stubs, prefix)))


def test_node_18_first_on_path_gets_the_pinned_node_installed(installed: Installed) -> None:
    result, prefix = installed.result, installed.prefix
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        f"bootstrap: system Node v18.19.0 is older than 20.19; installing Node v{NODE_VERSION}"
        f" (npm {NPM_VERSION}) into {prefix} from the npm registry"
    ) in result.stdout
    assert f"using Node v{NODE_VERSION} and npm {NPM_VERSION} ({prefix}/bin/node)" in (
        result.stdout
    )
    # nothing left of the download and staging next to the prefix
    assert [p.name for p in prefix.parent.iterdir() if ".partial." in p.name] == []

    node = prefix / "bin" / "node"
    version = subprocess.run(
        [str(node), "--version"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    assert version.strip() == f"v{NODE_VERSION}"
    assert _version(version) >= (20, 19, 0)
    ran = subprocess.run(
        [str(node), "-e", "console.log(1+1)"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    assert ran.stdout == "2\n"


def test_npm_in_the_prefix_runs_with_the_prefix_node(installed: Installed) -> None:
    """Even with the Node 18 stub first on PATH, for npm itself and for what it starts."""
    assert installed.result.returncode == 0, installed.result.stderr
    env = _env(installed.stubs, installed.prefix)
    npm = installed.prefix / "bin" / "npm"
    versions = subprocess.run(
        [str(npm), "version", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert f'"npm": "{NPM_VERSION}"' in versions
    assert f'"node": "{NODE_VERSION}"' in versions
    child = subprocess.run(
        [str(npm), "exec", "-c", "node --version"],
        env=env,
        cwd=installed.prefix.parent,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert child.stdout.strip() == f"v{NODE_VERSION}"
    npx = subprocess.run(
        [str(installed.prefix / "bin" / "npx"), "--version"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert npx.stdout.strip() == NPM_VERSION


def test_a_second_run_installs_nothing(installed: Installed) -> None:
    assert installed.result.returncode == 0, installed.result.stderr
    node = installed.prefix / "bin" / "node"
    before = node.stat().st_ino, node.stat().st_mtime_ns
    again = _select(_env(installed.stubs, installed.prefix))
    assert again.returncode == 0, again.stderr
    assert "installing" not in again.stdout
    assert again.stdout == (
        f"bootstrap: using Node v{NODE_VERSION} and npm {NPM_VERSION} ({node})\n"
    )
    assert (node.stat().st_ino, node.stat().st_mtime_ns) == before


def test_a_suitable_node_first_on_path_installs_nothing(
    installed: Installed, tmp_path: Path
) -> None:
    """The prefix's Node as the system's (it is >= 20.19, with npm): the prefix stays empty."""
    assert installed.result.returncode == 0, installed.result.stderr
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    result = _select(_env(installed.prefix / "bin", prefix))
    assert result.returncode == 0, result.stderr
    assert "installing" not in result.stdout
    assert result.stdout == (
        f"bootstrap: using Node v{NODE_VERSION} and npm {NPM_VERSION}"
        f" ({installed.prefix / 'bin' / 'node'})\n"
    )
    assert list(prefix.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prefix"]


def test_a_tampered_tarball_is_refused_before_it_is_unpacked(tmp_path: Path) -> None:
    """A registry mirror (HITL_SIP_NPM_REGISTRY) serving a plausible node package whose
    bin/node is not Node's: its sha512 is not the pinned one, so nothing is installed."""
    arch = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}[
        platform.machine().lower()
    ]
    package = f"node-linux-{arch}"
    fake = b"#!/bin/sh\necho v" + NODE_VERSION.encode() + b"\n"
    tarball = tmp_path / "mirror" / package / "-" / f"{package}-{NODE_VERSION}.tgz"
    tarball.parent.mkdir(parents=True)
    with tarfile.open(tarball, "w:gz") as tar:
        info = tarfile.TarInfo("package/bin/node")
        info.size, info.mode = len(fake), 0o755
        tar.addfile(info, io.BytesIO(fake))
    stubs = _stub_node_18(tmp_path / "stubs")
    prefix = tmp_path / "prefix"
    result = _select(_env(stubs, prefix, HITL_SIP_NPM_REGISTRY=(tmp_path / "mirror").as_uri()))
    assert result.returncode != 0
    assert f"checksum mismatch for {package}-{NODE_VERSION}.tgz, refusing to unpack it" in (
        result.stderr
    )
    assert not prefix.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mirror", "stubs"]


def test_a_wrong_pinned_checksum_is_refused(tmp_path: Path) -> None:
    """The real tarball against a wrong expected sha512 (HITL_SIP_NPM_SHA512, npm's: the
    smaller download): refused, nothing installed."""
    stubs = _stub_node_18(tmp_path / "stubs")
    prefix = tmp_path / "prefix"
    wrong = "sha512-" + "A" * 86 + "=="
    result = _select(_env(stubs, prefix, HITL_SIP_NPM_SHA512=wrong))
    assert result.returncode != 0
    assert f"checksum mismatch for npm-{NPM_VERSION}.tgz, refusing to unpack it" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stubs"]
