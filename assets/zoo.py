"""The zoo (group `zoo`): its corpus and tokenizer, each variant and seed trained with
checkpoints over training, and the registry that makes those checkpoints models the rest
of the DAG measures (reload the code location, or run `python -m pipelines.run --zoo`,
which does both)."""

import dagster as dg

from assets.partitions import zoo_scale, zoo_variant_partitions
from assets.resources import EexitResource
from eexit_core import settings
from eexit_core.stages import zoo as stages_zoo
from eexit_core.zoo.variants import Variant


def _variant(model_id: str) -> Variant:
    return next(v for v in stages_zoo.zoo_variants(zoo_scale()) if v.model_id == model_id)


@dg.asset(group_name="zoo", kinds={"python"})
def zoo_corpus(eexit: EexitResource) -> dg.MaterializeResult:
    """The training corpus from shipped texts and code, split by document, and its BPE tokenizer."""
    manifest = stages_zoo.build_zoo_corpus(eexit.workspace, settings.ZOO_VOCAB_SIZE)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(manifest["fingerprint"][:16]),
        metadata={"fingerprint": manifest["fingerprint"], "unigram_entropy": manifest["unigram_entropy"],
                  "train_tokens": manifest["tokens"]["train"], "validation_tokens": manifest["tokens"]["validation"],
                  "documents": dg.MetadataValue.json(manifest["documents"])},
    )


@dg.asset(group_name="zoo", partitions_def=zoo_variant_partitions, deps=[zoo_corpus], kinds={"pytorch"})
def zoo_checkpoints(context: dg.AssetExecutionContext, eexit: EexitResource) -> dg.MaterializeResult:
    """One variant and seed trained on the zoo's token budget, a model folder at each
    log-spaced checkpoint; a rerun resumes from the last checkpoint written."""
    variant = _variant(context.partition_key)
    plan = stages_zoo.zoo_training_plan(zoo_scale())
    rows = stages_zoo.train_zoo_variant(eexit.workspace, variant, plan, log=context.log.info)
    final = rows.row(-1, named=True)
    return dg.MaterializeResult(metadata={
        "final_val_loss": final["val_loss"], "unigram_entropy": final["unigram_entropy"],
        "below_unigram": final["unigram_entropy"] - final["val_loss"], "tokens": final["tokens"],
        "tokens_per_s": final["tokens_per_s"], "checkpoints": rows.height,
    })


@dg.asset(group_name="zoo", deps=[zoo_checkpoints], kinds={"yaml"})
def zoo_models(eexit: EexitResource) -> dg.MaterializeResult:
    """data/zoo/models.yaml: every checkpoint on disk as a model entry with its factors."""
    scale = zoo_scale()
    ids = stages_zoo.write_zoo_registry(eexit.workspace, stages_zoo.zoo_variants(scale),
                                        stages_zoo.zoo_training_plan(scale))
    finals = stages_zoo.final_losses(eexit.workspace)
    return dg.MaterializeResult(metadata={
        "models": len(ids), "path": dg.MetadataValue.path(str(eexit.workspace.zoo_registry)),
        # the zoo's bar for a base model: 1.5 nats below the unigram entropy (issue 14)
        "final_losses": dg.MetadataValue.md("\n".join(
            f"- {r['variant']} seed {r['seed']}: {r['val_loss']:.3f} nats, {r['below_unigram']:.2f} below unigram"
            for r in finals.iter_rows(named=True)) or "none"),
    })
