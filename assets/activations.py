import warnings

import dagster as dg

from eexit_core.stages import build_token_layer_stats, registries
from pipelines.partitions import model_workload_partitions
from pipelines.resources import EexitResource


with warnings.catch_warnings():
    # the mapping is marked beta but is the documented way to depend on one dimension
    warnings.simplefilter("ignore", dg.BetaWarning)
    _UPSTREAM = [
        dg.AssetDep("model_checkpoints", partition_mapping=dg.MultiToSingleDimensionPartitionMapping("model")),
        dg.AssetDep("workload_prompts", partition_mapping=dg.MultiToSingleDimensionPartitionMapping("workload")),
    ]


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
