import dagster as dg

from eexit_core.stages import build_layer_similarity
from pipelines.partitions import model_workload_partitions
from pipelines.resources import EexitResource


@dg.asset(partitions_def=model_workload_partitions, group_name="measurements", kinds={"parquet"}, deps=["token_layer_stats"])
def layer_similarity(context: dg.AssetExecutionContext, eexit: EexitResource) -> dg.MaterializeResult:
    """Per-layer means of every stat: the layer-to-final similarity curves."""
    keys = context.partition_key.keys_by_dimension
    table = build_layer_similarity(eexit.workspace, keys["model"], keys["workload"])
    last = table.sort("layer").row(-2, named=True) if table.height > 1 else {}
    return dg.MaterializeResult(
        metadata={"n_layers": table.height, "logit_cos_second_last_layer": float(last.get("logit_cos", 0.0))}
    )
