"""The locked dependency tree (constraints.txt, used by scripts/bootstrap.sh): every
dependency pyproject.toml names is pinned there, at a version its specifier admits, and the
bootstrap installs with it."""

from __future__ import annotations

import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.support.server import ROOT


def pins() -> dict[str, Version]:
    found: dict[str, Version] = {}
    for raw in (ROOT / "constraints.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"not pinned: {line!r}"
            found[canonicalize_name(name)] = Version(version)
    return found


def test_every_dependency_is_pinned_within_its_specifier() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["dev"],
              *project["optional-dependencies"]["azure"]]
    locked = pins()
    for text in wanted:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement.name} is not in constraints.txt"
        assert locked[name] in requirement.specifier, (
            f"{requirement.name}=={locked[name]} does not satisfy {requirement.specifier}")
    assert locked["python-socketio"] >= Version("5.14")  # CVE-2025-61765


def test_the_bootstrap_installs_with_the_constraints() -> None:
    script = (ROOT / "scripts" / "bootstrap.sh").read_text()
    assert "pip install -q -c constraints.txt -e '.[dev,azure]'" in script


def test_the_docker_image_installs_with_the_constraints() -> None:
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    copied = [line for line in dockerfile.splitlines() if line.startswith("COPY ")]
    assert any("constraints.txt" in line.split() for line in copied)
    installs = [line for line in dockerfile.splitlines() if "pip install" in line]
    assert installs and all("-c constraints.txt" in line for line in installs)
