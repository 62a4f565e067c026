"""layer_similarity [m × w]: per-layer means of every stat (the similarity curves)."""

from __future__ import annotations

import polars as pl

from eexit_core.analysis.similarity import layer_means
from eexit_core.stages.common import LAYER_SIMILARITY
from eexit_core.stages.token_stats import _provenance_columns, _token_stats
from eexit_core.storage.artifacts import write_parquet
from eexit_core.storage.schema import STAT_COLUMNS
from eexit_core.storage.workspace import Workspace


def build_layer_similarity(ws: Workspace, model_id: str, workload_id: str) -> pl.DataFrame:
    stats, meta = _token_stats(ws, model_id, workload_id)
    n_layers = int(stats["layer"].max())
    table = layer_means(stats, n_layers).with_columns(
        pl.lit(model_id).alias("model_id"), pl.lit(workload_id).alias("workload_id"), *_provenance_columns(meta)
    )
    # a cosine-only (d-space) run leaves the other stats null, so every table has one shape
    table = table.with_columns(pl.lit(None, dtype=pl.Float64).alias(c) for c in STAT_COLUMNS if c not in table.columns)
    table = table.select("model_id", "workload_id", "layer", pl.exclude("model_id", "workload_id", "layer"))
    write_parquet(table, ws.partition_path(LAYER_SIMILARITY, model_id, workload_id), metadata=meta)
    return table
