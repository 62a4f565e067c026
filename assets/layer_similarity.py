import dagster as dg

from assets.partitions import model_workload_partitions
from assets.resources import EexitResource
from eexit_core.analysis import checks
from eexit_core.stages import build_layer_similarity, registries


@dg.asset(
    partitions_def=model_workload_partitions, group_name="measurements", kinds={"parquet"}, deps=["token_layer_stats"],
    check_specs=[dg.AssetCheckSpec("similarities_in_range", asset="layer_similarity",
                                   description="every stat's mean finite and in range; one row per layer 1..L")],
)
def layer_similarity(context: dg.AssetExecutionContext, eexit: EexitResource) -> dg.MaterializeResult:
    """Per-layer means of every stat: the layer-to-final similarity curves."""
    keys = context.partition_key.keys_by_dimension
    models, _ = registries(eexit.workspace)
    table = build_layer_similarity(eexit.workspace, keys["model"], keys["workload"])
    last = table.sort("layer").row(-2, named=True) if table.height > 1 else {}
    outcome = checks.layer_similarity_in_range(table, models.get(keys["model"]).n_layers)
    return dg.MaterializeResult(
        metadata={"n_layers": table.height, "logit_cos_second_last_layer": float(last.get("logit_cos") or 0.0)},
        check_results=[dg.AssetCheckResult(check_name="similarities_in_range", passed=outcome.passed, metadata=outcome.metadata)],
    )
