"""oracle_exits [m × w]: token-level oracle exits and their speedup bounds."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from eexit_core.analysis import oracle
from eexit_core.registry import ModelEntry
from eexit_core.stages.checkpoint import read_checkpoint
from eexit_core.stages.common import ORACLE_EXITS
from eexit_core.stages.token_stats import _provenance_columns, _token_stats
from eexit_core.storage.artifacts import write_parquet
from eexit_core.storage.workspace import Workspace


def head_is_tied(checkpoint_dir: Path) -> bool:
    """Whether the checkpoint's LM head shares the input embedding (`tie_word_embeddings`,
    transformers' default True when absent; a multimodal config keeps it in `text_config`)."""
    config = json.loads((checkpoint_dir / "config.json").read_text())
    for section in (config, config.get("text_config") or {}):
        if "tie_word_embeddings" in section:
            return bool(section["tie_word_embeddings"])
    return True


def build_oracle_exits(ws: Workspace, model: ModelEntry, workload_id: str, *, tied_embeddings: bool | None = None) -> pl.DataFrame:
    """Token oracle exits and speedup bounds; the check cost counts the real head (an untied
    head is a parameter matrix of its own, which the blocks' share must not include)."""
    if tied_embeddings is None:
        tied_embeddings = head_is_tied(read_checkpoint(ws, model.model_id).path)
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
