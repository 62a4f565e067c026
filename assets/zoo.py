"""The zoo (group `zoo`): its corpus and tokenizer, each variant and seed trained with
checkpoints over training, and the registry that makes those checkpoints models the rest
of the DAG measures (reload the code location, or run `python -m pipelines.run --zoo`,
which does both)."""

import dagster as dg

from assets.partitions import zoo_scale, zoo_variant_partitions
from assets.resources import EexitResource
from eexit_core import settings
from eexit_core.analysis import checks
from eexit_core.stages import zoo as stages_zoo
from eexit_core.zoo.variants import Variant


def _variant(model_id: str) -> Variant:
    return next(v for v in stages_zoo.zoo_variants(zoo_scale()) if v.model_id == model_id)


@dg.asset(group_name="zoo", kinds={"python"},
          check_specs=[dg.AssetCheckSpec("corpus_ok", asset="zoo_corpus", description=checks.zoo_corpus_ok.__doc__)])
def zoo_corpus(eexit: EexitResource) -> dg.MaterializeResult:
    """The training corpus from shipped texts and code, split by document, and its BPE tokenizer."""
    manifest = stages_zoo.build_zoo_corpus(eexit.workspace, settings.ZOO_VOCAB_SIZE)
    outcome = checks.zoo_corpus_ok(manifest)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(manifest["fingerprint"][:16]),
        metadata={"fingerprint": manifest["fingerprint"], "unigram_entropy": manifest["unigram_entropy"],
                  "train_tokens": manifest["tokens"]["train"], "validation_tokens": manifest["tokens"]["validation"],
                  "documents": dg.MetadataValue.json(manifest["documents"])},
        check_results=[dg.AssetCheckResult(check_name="corpus_ok", passed=outcome.passed,
                                           metadata={k: dg.MetadataValue.json(v) if isinstance(v, dict) else v
                                                     for k, v in outcome.metadata.items()})],
    )


@dg.asset(group_name="zoo", partitions_def=zoo_variant_partitions, deps=[zoo_corpus], kinds={"pytorch"},
          check_specs=[dg.AssetCheckSpec("learned_language", asset="zoo_checkpoints",
                                         description=(checks.learned_language.__doc__ or "").split("\n")[0])])
def zoo_checkpoints(context: dg.AssetExecutionContext, eexit: EexitResource) -> dg.MaterializeResult:
    """One variant and seed trained on the zoo's token budget, a model folder at each
    log-spaced checkpoint; a rerun resumes from the last checkpoint written."""
    variant = _variant(context.partition_key)
    plan = stages_zoo.zoo_training_plan(zoo_scale())
    rows = stages_zoo.train_zoo_variant(eexit.workspace, variant, plan, log=context.log.info)
    final = rows.row(-1, named=True)
    # a warning, not an error: a model short of the bar is still measured, and its shortfall reported
    learned = checks.learned_language(final, variant.recipe)
    return dg.MaterializeResult(
        metadata={"final_val_loss": final["val_loss"], "unigram_entropy": final["unigram_entropy"],
                  "below_unigram": final["unigram_entropy"] - final["val_loss"], "tokens": final["tokens"],
                  "tokens_per_s": final["tokens_per_s"], "checkpoints": rows.height},
        check_results=[dg.AssetCheckResult(check_name="learned_language", passed=learned.passed,
                                           severity=dg.AssetCheckSeverity.WARN, metadata=learned.metadata)],
    )


@dg.asset(group_name="zoo", deps=[zoo_checkpoints], kinds={"yaml"},
          check_specs=[dg.AssetCheckSpec("every_checkpoint_registered", asset="zoo_models",
                                         description="data/zoo/models.yaml lists every checkpoint folder on disk, once")])
def zoo_models(eexit: EexitResource) -> dg.MaterializeResult:
    """data/zoo/models.yaml: every checkpoint on disk as a model entry with its factors."""
    scale = zoo_scale()
    variants, plan = stages_zoo.zoo_variants(scale), stages_zoo.zoo_training_plan(scale)
    ids = stages_zoo.write_zoo_registry(eexit.workspace, variants, plan)
    folders = stages_zoo.checkpoint_folders(eexit.workspace, variants, plan)
    finals = stages_zoo.final_losses(eexit.workspace)
    return dg.MaterializeResult(
        metadata={
            "models": len(ids), "path": dg.MetadataValue.path(str(eexit.workspace.zoo_registry)),
            f"final_losses (a base model learned language {settings.LEARNED_LANGUAGE_NATS} nats below unigram)":
                dg.MetadataValue.md("\n".join(
                    f"- {r['variant']} seed {r['seed']}: {r['val_loss']:.3f} nats, {r['below_unigram']:.2f} below unigram"
                    for r in finals.iter_rows(named=True)) or "none"),
        },
        check_results=[dg.AssetCheckResult(check_name="every_checkpoint_registered",
                                           passed=len(ids) == len(set(ids)) == len(folders),
                                           metadata={"entries": len(ids), "checkpoint_folders": len(folders)})],
    )
