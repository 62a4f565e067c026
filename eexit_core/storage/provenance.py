"""What produced a result: code version, package versions, seeds."""

from __future__ import annotations

import functools
import importlib.metadata
import subprocess
from pathlib import Path


@functools.cache
def code_version(root: Path | None = None) -> str:
    """`git describe` of the checkout (with -dirty), else the package version."""
    from eexit_core.storage.workspace import REPOSITORY_ROOT

    root = root or REPOSITORY_ROOT
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=root, capture_output=True, text=True, timeout=10, check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        try:
            return importlib.metadata.version("eexit")
        except importlib.metadata.PackageNotFoundError:
            return "unknown"


def library_versions() -> dict[str, str]:
    names = ("torch", "transformers", "gguf", "polars", "duckdb")
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions
