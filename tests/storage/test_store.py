"""The DuckDB results store: transactional, idempotent publishes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest

from eexit_core.storage import store


def test_publish_replaces_and_is_idempotent(tmp_path):
    db = tmp_path / "results.duckdb"
    frame = pl.DataFrame({"model_id": ["a", "b"], "family": ["x", "y"]})
    store.publish(db, {"models": frame})
    store.publish(db, {"models": frame})
    assert store.read_table(db, "models").sort("model_id").equals(frame)


def test_failed_publish_keeps_the_old_tables(tmp_path):
    db = tmp_path / "results.duckdb"
    good = pl.DataFrame({"model_id": ["a"], "family": ["x"]})
    store.publish(db, {"models": good, "workloads": pl.DataFrame({"workload_id": ["w"]})})
    with pytest.raises(ValueError, match="duplicate keys"):
        store.publish(db, {"workloads": pl.DataFrame({"workload_id": ["v"]}),
                           "models": pl.DataFrame({"model_id": ["a", "a"], "family": ["x", "z"]})})
    assert store.read_table(db, "models").equals(good)
    assert store.read_table(db, "workloads")["workload_id"].to_list() == ["w"]


def test_error_mid_transaction_rolls_back(tmp_path, monkeypatch):
    db = tmp_path / "results.duckdb"
    store.publish(db, {"models": pl.DataFrame({"model_id": ["a"]})})
    missing = str(tmp_path / "nothing-here" / "m.parquet")
    with pytest.raises(duckdb.Error):
        store.publish(db, {"models": pl.DataFrame({"model_id": ["b"]})}, token_stats_files=[missing])
    assert store.read_table(db, "models")["model_id"].to_list() == ["a"]


def test_token_stats_view_reads_parquet(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "parts").mkdir()
    pl.DataFrame({"model_id": ["m"], "layer": [1], "logit_cos": [0.5]}).write_parquet(tmp_path / "parts" / "m.parquet")
    pl.DataFrame({"model_id": ["gone"], "layer": [1], "logit_cos": [0.1]}).write_parquet(tmp_path / "parts" / "gone.parquet")
    db = tmp_path / "r.duckdb"
    store.publish(db, {}, token_stats_files=["parts/m.parquet"])
    # exactly the files named: a stale or deregistered partition beside them is not shown
    assert store.query(db, "select model_id, logit_cos from token_layer_stats").rows() == [("m", 0.5)]
    store.publish(db, {"models": pl.DataFrame({"model_id": ["m"]})})  # None: the view stays
    assert store.query(db, "select count(*) as n from token_layer_stats").item() == 1
    store.publish(db, {}, token_stats_files=[])  # nothing current: no view, not an old one
    assert store.query(db, "select count(*) as n from information_schema.tables where table_name = 'token_layer_stats'").item() == 0


def _hold_store(db: Path, seconds: float) -> subprocess.Popen:
    """Another process with the store open read-only (a notebook), for `seconds`."""
    code = f"import duckdb, time; c = duckdb.connect({str(db)!r}, read_only=True); print('held', flush=True); time.sleep({seconds})"
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_publishing_waits_for_a_reader_to_let_go(tmp_path, capsys):
    db = tmp_path / "results.duckdb"
    store.publish(db, {"models": pl.DataFrame({"model_id": ["a"]})})
    holder = _hold_store(db, 1.5)
    try:
        store.publish(db, {"models": pl.DataFrame({"model_id": ["b"]})}, lock_wait_s=30)
    finally:
        holder.kill()
    assert store.read_table(db, "models")["model_id"].to_list() == ["b"]
    assert f"process {holder.pid}" in capsys.readouterr().err


def test_a_reader_that_stays_is_named_and_the_old_tables_stay(tmp_path):
    db = tmp_path / "results.duckdb"
    store.publish(db, {"models": pl.DataFrame({"model_id": ["a"]})})
    holder = _hold_store(db, 30)
    try:
        with pytest.raises(store.StoreLockedError, match=rf"held by process {holder.pid} .*close that connection"):
            store.publish(db, {"models": pl.DataFrame({"model_id": ["b"]})}, lock_wait_s=0.5)
    finally:
        holder.kill()
        holder.wait()
    assert store.read_table(db, "models")["model_id"].to_list() == ["a"]
