import dagster as dg

from eexit_core.stages import build_token_layer_stats, registries
from assets.partitions import model_workload_partitions, upstream_by_dimension
from assets.resources import EexitResource


_UPSTREAM = upstream_by_dimension(model="model_checkpoints", workload="workload_prompts")


@dg.asset(
    partitions_def=model_workload_partitions,
    group_name="measurements",
    kinds={"parquet", "pytorch"},
    deps=_UPSTREAM,
)
def token_layer_stats(context: dg.AssetExecutionContext, eexit: EexitResource) -> dg.MaterializeResult:
    """Per-token, per-layer lens stats (SPEC §1) of one model on one workload."""
    keys = context.partition_key.keys_by_dimension
    models, workloads = registries(eexit.workspace)
    stats = build_token_layer_stats(
        eexit.workspace, models.get(keys["model"]), workloads.get(keys["workload"]), eexit.lens_settings()
    )
    n_layers = int(stats["layer"].max()) if stats.height else 0
    return dg.MaterializeResult(
        metadata={"rows": stats.height, "n_tokens": stats.height // max(n_layers, 1), "n_layers": n_layers}
    )
