"""Atomic artifact writes and checksums: a killed run never leaves a half-written file."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl

# Temporaries are hidden and end in these suffixes (`.dvcignore` ignores the same patterns).
TEMPORARY_SUFFIXES = (".tmp", ".old")


def _umask() -> int:
    """The process umask, read without changing it (Linux), else by setting it back at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _publishable(path: Path, *, folder: bool = False) -> None:
    """Give a finished temporary the mode a plain write would have had: mkstemp and mkdtemp
    make it private (0600 / 0700), which locks colleagues out of a shared results folder."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


def crash_here_if_asked(name: str) -> None:
    """The fault-injection point of every write (`EEXIT_KILL_AT`, tests only): die as a
    kill -9 would, after the data is written and before it is committed."""
    from eexit_core.settings import kill_point

    point = kill_point()
    if point and point in name:
        os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it over `target` on success."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _publishable(tmp_path)
        crash_here_if_asked(f"{target.parent.name}/{target.name}")
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; swap it in for `target` on success."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        _publishable(tmp, folder=True)
        crash_here_if_asked(f"{target.parent.name}/{target.name}")
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporaries a killed write left under `folder` (hidden names ending in
    `.tmp` or `.old`, files or folders); returns what was removed. Only for a moment when
    no write of ours can be running, e.g. the start of a run."""
    removed = []
    if not folder.is_dir():
        return removed
    for path in sorted(folder.rglob(".*"), key=lambda p: len(p.parts)):
        if path.suffix in TEMPORARY_SUFFIXES and path.exists():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def write_parquet(frame: pl.DataFrame, target: Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write `frame` to `target` atomically; `metadata` goes into the Parquet footer."""
    footer = {"eexit": json.dumps(metadata, sort_keys=True, default=str)} if metadata else None
    with atomic_path(target) as tmp:
        frame.write_parquet(tmp, metadata=footer)
    return target


def read_parquet_metadata(path: Path) -> dict[str, Any]:
    raw = pl.read_parquet_metadata(path).get("eexit")
    return json.loads(raw) if raw else {}


def write_json(payload: Any, target: Path) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    return target


@contextmanager
def availability_recorded(record: Path, identity: dict[str, str], unavailable: type[Exception]) -> Iterator[None]:
    """Record that a source (a model's weights, a workload's data package) is missing here
    when the block raises `unavailable`, then re-raise: the runner tells such a partition
    apart from a failure by this record, and the results store lists the reason."""
    try:
        yield
    except unavailable as exc:
        write_json({**identity, "available": False, "reason": str(exc)}, record)
        raise


def write_text(text: str, target: Path) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()
