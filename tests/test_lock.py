"""The committed lock is what set-up installs and what the tests run on."""

from __future__ import annotations

import os
import re
from importlib import metadata

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO

NOT_LOCKED = {"torch"}  # set-up picks the CPU or the CUDA build per machine


def _lock(name: str) -> dict[str, str]:
    pins = {}
    for line in (REPO / name).read_text().splitlines():
        if line and not line.startswith("#"):
            package, _, version = line.partition("==")
            assert version and re.fullmatch(r"[A-Za-z0-9_.+!-]+", version), f"{name}: not an exact pin: {line!r}"
            pins[canonicalize_name(package)] = version
    return pins


def _declared() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["test"]]]


def test_every_declared_dependency_is_pinned_within_its_range():
    pins = _lock("requirements.lock")
    for requirement in _declared():
        name = canonicalize_name(requirement.name)
        if name in NOT_LOCKED:
            assert name not in pins
            continue
        assert name in pins, f"{requirement.name} is declared in pyproject.toml but not in requirements.lock: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {requirement.name}=={pins[name]} outside pyproject.toml's {requirement.specifier}")


@pytest.mark.skipif(bool(os.environ.get("EEXIT_LOCKING")), reason="`make lock` is testing a new resolution")
def test_the_environment_is_the_lock():
    """What set-up installed is what the lock says (else the tests did not test the lock)."""
    differing = {name: (version, metadata.version(name)) for name, version in _lock("requirements.lock").items()
                 if _installed(name) and metadata.version(name) != version}
    missing = [name for name in _lock("requirements.lock") if not _installed(name)]
    assert not differing and not missing, f"installed differs from requirements.lock: {differing}; missing: {missing}; run `make setup`"


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


def test_dvc_lock_pins_dvc():
    assert _lock("requirements-dvc.lock")["dvc"] == "3.67.1"
