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
