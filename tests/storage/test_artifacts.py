"""Atomic writes: an interrupted write leaves neither a partial file nor debris."""

from __future__ import annotations

import polars as pl
import pytest

from eexit_core.storage.artifacts import atomic_dir, atomic_path, read_parquet_metadata, sha256_file, write_parquet


def test_interrupted_write_leaves_old_file(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_interrupted_dir_swap_keeps_old_dir(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "w").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "w").write_text("new")
            raise RuntimeError("killed")
    assert (target / "w").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    with atomic_dir(target) as tmp:
        (tmp / "w").write_text("new")
    assert (target / "w").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_parquet_carries_provenance(tmp_path):
    path = write_parquet(pl.DataFrame({"x": [1]}), tmp_path / "p.parquet", {"seed": 3, "code_version": "abc"})
    assert read_parquet_metadata(path) == {"code_version": "abc", "seed": 3}
    assert len(sha256_file(path)) == 64


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_artifacts_get_the_mode_the_umask_gives(tmp_path, umask):
    """Not the 0600 / 0700 of a temporary: a shared results folder stays readable."""
    import os
    import stat

    from eexit_core.storage.artifacts import write_json

    previous = os.umask(umask)
    try:
        path = write_json({"a": 1}, tmp_path / "record.json")
        with atomic_dir(tmp_path / "model") as tmp:
            (tmp / "w").write_text("x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o777 & ~umask


def test_a_rerun_removes_the_temporaries_a_kill_left(tmp_path):
    """What kill -9 leaves mid-write (a hidden temporary file, a half-converted model folder,
    a swapped-out old folder) is removed; data and ordinary hidden files are not."""
    from eexit_core.storage.artifacts import remove_stale_temporaries

    parts = tmp_path / "artifacts" / "token_layer_stats"
    parts.mkdir(parents=True)
    (parts / "m__w.parquet").write_bytes(b"data")
    (parts / ".m__w.parquet.k2j4.tmp").write_bytes(b"")
    half = tmp_path / "models" / ".gemma.a8f.tmp"
    half.mkdir(parents=True)
    (half / "model.safetensors").write_bytes(b"half")
    (tmp_path / "models" / ".gemma.old").mkdir()
    (tmp_path / ".gitkeep").write_text("")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [".gemma.a8f.tmp", ".gemma.old", ".m__w.parquet.k2j4.tmp"]
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        ".gitkeep", "artifacts", "artifacts/token_layer_stats", "artifacts/token_layer_stats/m__w.parquet", "models"]
    assert remove_stale_temporaries(tmp_path / "absent") == []


def test_dvc_ignores_the_temporaries():
    """`.dvcignore` holds the temporaries' patterns, so `dvc status` and `dvc push` skip them."""
    import subprocess

    from eexit_core.storage.artifacts import TEMPORARY_SUFFIXES
    from tests.conftest import REPO

    dvc = REPO / ".venv" / "bin" / "dvc"
    if not dvc.exists():
        pytest.skip("DVC is not installed: run `make setup`")
    paths = ["data/artifacts/token_layer_stats/.m__w.parquet.k2j4.tmp", "data/models/.gemma.old", "data/artifacts/prompts/w.parquet"]
    result = subprocess.run([str(dvc), "check-ignore", "--non-matching", "--details", *paths], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    ignored = {line.split("\t")[-1] for line in result.stdout.splitlines() if not line.startswith("::")}
    assert ignored == set(paths[:2]), result.stdout + result.stderr
    patterns = (REPO / ".dvcignore").read_text().splitlines()
    assert all(f".*{suffix}" in patterns for suffix in TEMPORARY_SUFFIXES)


_FULL_DISK = """
import resource, signal, sys
from pathlib import Path
import polars as pl
from eexit_core.storage.artifacts import write_parquet

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))
frame = pl.DataFrame({"x": list(range(200_000)), "y": [float(i) ** 0.5 for i in range(200_000)]})
try:
    write_parquet(frame, Path(sys.argv[1]), metadata={"run": "second"})
except Exception as exc:  # polars reports the OS error inside its own error type
    print(exc)
    sys.exit(3)
"""


def test_a_full_disk_mid_write_leaves_the_old_artifact_and_no_debris(tmp_path):
    """The write fails (the file-size limit stands in for a full disk), the error reaches
    the caller, and the artifact readers see is the old one, whole."""
    import errno
    import subprocess
    import sys

    from tests.conftest import REPO

    target = tmp_path / "token_layer_stats" / "m__w.parquet"
    write_parquet(pl.DataFrame({"x": [1, 2, 3]}), target, metadata={"run": "first"})
    result = subprocess.run([sys.executable, "-c", _FULL_DISK, str(target)], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 3, result.stderr[-2000:]
    assert f"os error {errno.EFBIG}" in result.stdout, result.stdout  # File too large
    assert pl.read_parquet(target)["x"].to_list() == [1, 2, 3]
    assert read_parquet_metadata(target)["run"] == "first"
    assert [p.name for p in target.parent.iterdir()] == ["m__w.parquet"]
