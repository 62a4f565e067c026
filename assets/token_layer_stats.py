import dagster as dg
import polars as pl

from assets.config import TokenStatsConfig, activation_dumps_on
from assets.partitions import model_workload_partitions, upstream_by_dimension
from assets.resources import EexitResource
from eexit_core.stages import (
    TOKEN_STATS,
    build_token_layer_stats,
    lens_code_version,
    registries,
    token_stats_data_version,
    token_stats_fresh,
)

# with dumps on (EEXIT_ACTIVATION_DUMPS), the stats are read from layer_activations
_UPSTREAM = [*upstream_by_dimension(model="model_checkpoints", workload="workload_prompts"),
             *([dg.AssetDep("layer_activations")] if activation_dumps_on() else [])]


@dg.asset(
    partitions_def=model_workload_partitions,
    group_name="measurements",
    kinds={"parquet", "pytorch"},
    deps=_UPSTREAM,
    code_version=lens_code_version(TokenStatsConfig().lens_settings("cpu")),
)
def token_layer_stats(context: dg.AssetExecutionContext, eexit: EexitResource, config: TokenStatsConfig) -> dg.MaterializeResult:
    """Per-token, per-layer lens stats of one model on one workload (README: "What is measured").
    Stored stats that are fresh (same checkpoint, prompts, lens code and settings) are kept
    unless `force` is set."""
    keys = context.partition_key.keys_by_dimension
    ws = eexit.workspace
    models, workloads = registries(ws)
    model, workload = models.get(keys["model"]), workloads.get(keys["workload"])
    lens = config.lens_settings(eexit.device)
    recomputed = config.force or not token_stats_fresh(ws, model.model_id, workload, lens)
    if recomputed:
        build_token_layer_stats(ws, model, workload, lens)
    else:
        context.log.info("the stored stats are fresh: kept (set force: true to recompute)")
    rows, n_layers = pl.scan_parquet(ws.partition_path(TOKEN_STATS, model.model_id, workload.workload_id)).select(
        pl.len(), pl.col("layer").max()).collect().row(0)
    return dg.MaterializeResult(
        metadata={"rows": rows, "n_tokens": rows // max(n_layers or 1, 1), "n_layers": n_layers or 0, "recomputed": recomputed},
        data_version=dg.DataVersion(token_stats_data_version(ws, model.model_id, workload.workload_id)),
    )
