import dagster as dg

from assets.partitions import model_partitions
from assets.resources import EexitResource
from eexit_core.stages import build_model_checkpoint, registries


@dg.asset(partitions_def=model_partitions, group_name="inputs", kinds={"pytorch"})
def model_checkpoints(context: dg.AssetExecutionContext, eexit: EexitResource) -> dg.MaterializeResult:
    """Verified, dequantised Hugging Face checkpoint of one model (fails clearly if unreachable)."""
    models, _ = registries(eexit.workspace)
    entry = models.get(context.partition_key)
    checkpoint = build_model_checkpoint(eexit.workspace, entry, allow_download=eexit.allow_download)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(checkpoint.checksum[:16]),
        metadata={
            "path": dg.MetadataValue.path(str(checkpoint.path)),
            "checksum": checkpoint.checksum,
            "quantization": checkpoint.quantization or "none",
            "n_layers": entry.n_layers,
        }
    )
