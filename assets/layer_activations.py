import dagster as dg

from assets.config import ActivationDumpConfig
from assets.partitions import model_workload_partitions, upstream_by_dimension
from assets.resources import EexitResource
from eexit_core.lens.activations import ActivationDumpError, read_manifest
from eexit_core.stages import LAYER_ACTIVATIONS, registries
from eexit_core.stages.layer_activations import (
    activations_code_version,
    build_layer_activations,
    layer_activations_data_version,
    layer_activations_fresh,
)

_UPSTREAM = upstream_by_dimension(model="model_checkpoints", workload="workload_prompts")


@dg.asset(
    partitions_def=model_workload_partitions,
    group_name="measurements",
    kinds={"safetensors", "pytorch"},
    deps=_UPSTREAM,
    code_version=activations_code_version(ActivationDumpConfig().dump_settings("cpu")),
    check_specs=[dg.AssetCheckSpec("dump_complete", asset=LAYER_ACTIVATIONS,
                                   description="every shard the manifest lists is present with its SHA-256, and the "
                                               "shards hold the manifest's tokens")],
)
def layer_activations(context: dg.AssetExecutionContext, eexit: EexitResource,
                      config: ActivationDumpConfig) -> dg.MaterializeResult:
    """The residual stream h_1 ... h_L of every token the lens scores in one model × workload
    partition, as safetensors shards (one per lens batch) and a manifest (README: "Activation
    dumps"). Upstream of token_layer_stats when EEXIT_ACTIVATION_DUMPS names a dtype. A
    complete, fresh dump is kept unless `force` is set."""
    keys = context.partition_key.keys_by_dimension
    ws = eexit.workspace
    models, workloads = registries(ws)
    model, workload = models.get(keys["model"]), workloads.get(keys["workload"])
    dump = config.dump_settings(eexit.device)
    recomputed = config.force or not layer_activations_fresh(ws, model.model_id, workload, dump)
    if recomputed:
        build_layer_activations(ws, model, workload, dump, announce=context.log.info)
    else:
        context.log.info("the stored dump is complete and fresh: kept (set force: true to dump again)")
    target = ws.dump_dir(model.model_id, workload.workload_id)
    try:
        manifest = read_manifest(target)
        complete, why = sum(s.n_tokens for s in manifest.shards) == manifest.n_tokens, ""
    except ActivationDumpError as exc:
        manifest, complete, why = read_manifest(target, verify=False), False, str(exc)
    return dg.MaterializeResult(
        metadata={"n_tokens": manifest.n_tokens, "n_layers": manifest.n_layers, "d_model": manifest.d_model,
                  "dtype": manifest.dtype, "mib": round(manifest.n_bytes / 2**20, 1), "shards": len(manifest.shards),
                  "path": dg.MetadataValue.path(str(target)), "recomputed": recomputed},
        data_version=dg.DataVersion(layer_activations_data_version(ws, model.model_id, workload.workload_id)),
        check_results=[dg.AssetCheckResult(check_name="dump_complete", passed=complete,
                                           metadata={"problem": why} if why else {})],
    )
