"""The results store: one DuckDB file, one table per asset, SQL-queryable.

Partitions write Parquet; only the step that owns the store writes this file. Every
publish replaces whole tables inside one transaction, so a reader sees either the old
results or the new ones, never a mix, and rerunning is idempotent.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import duckdb
import polars as pl

from eexit_core import settings
from eexit_core.errors import EexitError
from eexit_core.storage.artifacts import crash_here_if_asked

# Contract tables of SPEC §2 with their key columns.
TABLE_KEYS: dict[str, tuple[str, ...]] = {
    "models": ("model_id",),
    "workloads": ("workload_id",),
    "prompts": ("workload_id", "prompt_id"),
    "layer_similarity": ("model_id", "workload_id", "layer"),
    "oracle_exits": ("model_id", "workload_id", "criterion"),
    "eas_scores": ("model_id", "workload_id", "metric", "alpha"),
    "exit_accuracy": ("model_id", "workload_id", "policy", "exit_layer"),
    # beyond the contract
    "exit_items": ("model_id", "workload_id", "policy", "exit_layer", "prompt_id"),
    "exit_skip_bounds": ("model_id", "workload_id"),
    "similarity_accuracy_correlation": ("scope", "metric"),
    "zoo_training": ("variant", "seed", "step"),  # in the contract; empty until the zoo has trained
    # RQ2 (eexit_core/analysis/uncertainty.py, variance.py, factors.py)
    "eas_intervals": ("model_id", "workload_id", "metric", "alpha"),
    "oracle_intervals": ("model_id", "workload_id", "criterion"),
    "factor_contrasts": ("factor", "level", "baseline", "workload_id", "metric", "alpha"),  # empty without the zoo
    "variance_share": ("scope", "metric", "alpha", "component"),
    "training_dynamics": ("variant", "seed", "step", "metric"),  # empty without the zoo
    "published_eas": ("model_name",),
    "factor_regression": ("factor", "term"),
    # issue 16 (eexit_core/analysis/speculation.py); empty until `--stage speculation` has run
    "self_speculation": ("model_id", "workload_id", "exit_layer", "draft_len", "split"),
    "self_speculation_items": ("model_id", "workload_id", "exit_layer", "draft_len", "prompt_id"),
    # issue 25 (eexit_core/analysis/exit_heads.py); empty until `--stage tuned` has run
    "exit_head_similarity": ("model_id", "workload_id", "exit_head", "layer"),
    "exit_head_eas": ("model_id", "workload_id", "exit_head", "metric", "alpha"),
    "exit_heads": ("model_id", "workload_id", "exit_head"),
    "tuned_lens_fit": ("model_id", "exit_head", "layer"),
}
TOKEN_STATS_VIEW = "token_layer_stats"


class StoreLockedError(EexitError):
    """Another process holds the results store (a notebook, a `duckdb` shell) past the wait."""


def _connect_for_writing(db_path: Path, wait_s: float) -> duckdb.DuckDBPyConnection:
    """A read-write connection; while another process holds the file, retry for `wait_s`
    seconds, saying once who holds it, then fail naming the holder."""
    deadline = time.monotonic() + wait_s
    said = False
    while True:
        try:
            return duckdb.connect(str(db_path))
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            holder = _lock_holder(str(exc))
            if time.monotonic() >= deadline:
                raise StoreLockedError(
                    f"{db_path} is held by {holder}: close that connection (a notebook or a duckdb shell reading "
                    f"the store) and rerun the results stage (`python -m pipelines.run --stage results`)") from exc
            if not said:
                print(f"waiting up to {wait_s:.0f}s for {holder} to release {db_path.name}", file=sys.stderr, flush=True)
                said = True
            time.sleep(min(1.0, max(deadline - time.monotonic(), 0.05)))


def _lock_holder(message: str) -> str:
    found = re.search(r"held in (.+?) \(PID (\d+)\)", message)
    return f"process {found.group(2)} ({found.group(1)})" if found else "another process"


def _check_keys(name: str, frame: pl.DataFrame) -> None:
    keys = TABLE_KEYS.get(name)
    if keys is None or frame.is_empty():
        return
    missing = [k for k in keys if k not in frame.columns]
    if missing:
        raise ValueError(f"table {name!r} needs key columns {missing}")
    dupes = frame.group_by(list(keys)).len().filter(pl.col("len") > 1)
    if dupes.height:
        raise ValueError(f"table {name!r} has duplicate keys, e.g. {dupes.row(0)}")


def publish(db_path: Path, tables: Mapping[str, pl.DataFrame], *, token_stats_files: list[str] | None = None,
            lock_wait_s: float = settings.STORE_LOCK_WAIT_S) -> None:
    """Replace `tables` and the token stats view in one transaction. The view reads exactly
    `token_stats_files` (paths relative to the project root, where the store is queried
    from); an empty list drops it, so it never shows partitions the tables leave out, and
    None leaves it as it is."""
    for name, frame in tables.items():
        _check_keys(name, frame)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    con = _connect_for_writing(db_path, lock_wait_s)
    try:
        con.execute("BEGIN TRANSACTION")
        for name, frame in tables.items():
            con.register("_incoming", frame.to_arrow())
            con.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM _incoming')
            con.unregister("_incoming")
        if token_stats_files is None:
            pass
        elif token_stats_files:
            listed = ", ".join("'" + path.replace("'", "''") + "'" for path in token_stats_files)
            con.execute(f"CREATE OR REPLACE VIEW {TOKEN_STATS_VIEW} AS SELECT * FROM read_parquet([{listed}], union_by_name = true)")
        else:
            con.execute(f"DROP VIEW IF EXISTS {TOKEN_STATS_VIEW}")
        crash_here_if_asked(db_path.name)  # mid-transaction: DuckDB must recover the old tables
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    finally:
        con.close()


def read_table(db_path: Path, name: str) -> pl.DataFrame:
    """A whole table as a Polars frame (read-only connection)."""
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        return pl.from_arrow(con.sql(f'SELECT * FROM "{name}"').to_arrow_table())
    finally:
        con.close()


def query(db_path: Path, sql: str) -> pl.DataFrame:
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        return pl.from_arrow(con.sql(sql).to_arrow_table())
    finally:
        con.close()
