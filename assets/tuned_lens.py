import dagster as dg
import polars as pl

from assets.config import TunedLensConfig
from assets.partitions import model_partitions, workload_partitions
from assets.resources import EexitResource
from eexit_core.analysis import checks
from eexit_core.stages import TUNED_LENS, registries
from eexit_core.stages.tuned_lens import (
    build_tuned_lens,
    fit_path,
    tuned_code_version,
    tuned_lens_data_version,
    tuned_lens_problem,
)
from eexit_core.storage.artifacts import read_parquet_metadata


def _upstream() -> list:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)  # the documented way to depend on one dimension
        return [dg.AssetDep("layer_activations",
                            partition_mapping=dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="model"))]


@dg.asset(
    partitions_def=model_partitions,
    group_name="measurements",
    kinds={"safetensors", "pytorch"},
    deps=_upstream(),
    code_version=tuned_code_version(TunedLensConfig().tuned_settings()),
    check_specs=[dg.AssetCheckSpec("no_worse_than_own_head", asset=TUNED_LENS,
                                   description=(checks.tuned_no_worse_held_out.__doc__ or "").split("\n")[0]),
                 dg.AssetCheckSpec("control_gains_nothing", asset=TUNED_LENS,
                                   description=(checks.control_gains_nothing.__doc__ or "").split("\n")[0])],
)
def tuned_lens(context: dg.AssetExecutionContext, eexit: EexitResource, config: TunedLensConfig) -> dg.MaterializeResult:
    """A learned exit head for one model (README: "Activation dumps"): an affine translator
    per layer, fitted from the layer_activations dumps of every workload's training
    prompts, with the held-out prompts' token stats through the own head, the tuned head
    and a shuffled control. A fresh stored lens is kept unless `force` is set."""
    ws = eexit.workspace
    models, registry = registries(ws)
    model = models.get(context.partition_key)
    workloads = [registry.get(w) for w in workload_partitions.get_partition_keys() if ws.prompts_path(w).is_file()]
    settings = config.tuned_settings()
    problem = "forced" if config.force else tuned_lens_problem(ws, model.model_id, workloads, settings)

    def progress(message: str) -> None:
        context.log.info(message)
        print(f"    {message}", flush=True)  # the runner's console shows Dagster warnings only

    if problem is not None:
        build_tuned_lens(ws, model, workloads, settings, device=eexit.device, progress=progress)
    else:
        context.log.info("the stored tuned lens is fresh: kept (set force: true to fit again)")
    fits = pl.read_parquet(fit_path(ws, model.model_id))
    tuned = fits.filter(pl.col("exit_head") == "tuned")
    files = [ws.partition_path(TUNED_LENS, model.model_id, w.workload_id) for w in workloads]
    held_out = pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")
    weights = [(meta["constant_kl"], meta["held_out_tokens"]) for meta in map(read_parquet_metadata, files)]
    constant_kl = sum(k * n for k, n in weights) / max(sum(n for _, n in weights), 1)
    outcomes = {"no_worse_than_own_head": checks.tuned_no_worse_held_out(held_out),
                "control_gains_nothing": checks.control_gains_nothing(held_out, constant_kl)}
    return dg.MaterializeResult(
        metadata={"layers": tuned.height, "workloads": len(workloads), "recomputed": problem is not None,
                  "kept": dict(tuned.group_by("kept").len().iter_rows())},
        data_version=dg.DataVersion(tuned_lens_data_version(ws, model.model_id)),
        check_results=[dg.AssetCheckResult(check_name=name, passed=o.passed, metadata=o.metadata)
                       for name, o in outcomes.items()],
    )
