"""oracle_exits [m × w]: token-level oracle exits and their speedup bounds."""

from __future__ import annotations

import polars as pl

from eexit_core.analysis import oracle
from eexit_core.registry import ModelEntry
from eexit_core.stages.common import ORACLE_EXITS
from eexit_core.stages.token_stats import _provenance_columns, _token_stats
from eexit_core.storage.artifacts import write_parquet
from eexit_core.storage.workspace import Workspace


def build_oracle_exits(ws: Workspace, model: ModelEntry, workload_id: str, *, tied_embeddings: bool = True) -> pl.DataFrame:
    stats, meta = _token_stats(ws, model.model_id, workload_id)
    if "top1_match" not in stats.columns:
        raise ValueError(
            f"{model.model_id}|{workload_id}: oracle exits need top1_match, but the token stats "
            "were computed for cosines only (EEXIT_STATS); rerun token_layer_stats with all stats"
        )
    n_layers = int(stats["layer"].max())
    check_cost = oracle.exit_check_cost(model.d_model, model.vocab_size, model.params_total, n_layers, tied_embeddings)
    rows = []
    for criterion in oracle.CRITERIA:
        exits = oracle.oracle_exit_layers(stats, criterion)
        rows.append({"model_id": model.model_id, "workload_id": workload_id, "criterion": criterion,
                     "n_layers": n_layers, **oracle.summarise(exits, n_layers, check_cost)})
    table = pl.DataFrame(rows).with_columns(*_provenance_columns(meta))
    write_parquet(table, ws.partition_path(ORACLE_EXITS, model.model_id, workload_id), metadata=meta)
    return table
