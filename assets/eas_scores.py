"""eas_scores and the results store: one computation publishes every store table in one
transaction, so they are one multi-asset, a spec (and a check) per table."""

import dagster as dg
import polars as pl

from assets.config import ScoresConfig
from assets.partitions import published_model_ids, workload_partitions
from assets.resources import EexitResource
from eexit_core.analysis import checks
from eexit_core.stages import build_eas_scores, eas_table
from eexit_core.storage import store

_UPSTREAM = ["layer_similarity", "oracle_exits", "exit_accuracy", "self_speculation_items", "tuned_lens", "model_checkpoints",
             "workload_prompts"]

# the other tables of the store, as assets results_store/<table>
STORE_TABLE_DESCRIPTIONS = {
    "models": "Every registered model with its factor metadata and whether it ran (and why not)",
    "workloads": "Every registered workload with its source, grader and whether its data was there",
    "prompts": "The prompts of every workload, as the lens and the graders saw them",
    "layer_similarity": "S_l per model × workload × layer under every similarity metric",
    "oracle_exits": "Mean oracle exit layer and speedup bound per model × workload × criterion",
    "exit_accuracy": "Task accuracy per exit rule (static layers, dynamic policies, per-item oracle)",
    "exit_items": "Every graded item under every exit rule: output, correctness, layers used",
    "exit_skip_bounds": "Max skip ratio within the accuracy tolerance, chance level and significance",
    "similarity_accuracy_correlation": "RQ1: Spearman of S_l against accuracy under static exit, with bootstrap CIs",
    "zoo_training": "The zoo's training: validation loss per variant, seed and checkpoint, and the unigram baseline",
    "eas_intervals": "RQ2: EAS with a bootstrap 95 % interval (prompts resampled within workloads)",
    "oracle_intervals": "RQ2: token-oracle speedup bounds and skip ratios with bootstrap 95 % intervals",
    "factor_contrasts": "RQ2: the zoo's one-factor EAS differences, paired by seed and prompt, with 95 % intervals",
    "variance_share": "RQ2: shares of per-prompt EAS variance due to model, workload, interaction and prompts",
    "training_dynamics": "RQ2: EAS and half-depth top-1 agreement of every zoo checkpoint against tokens trained",
    "published_eas": "The study's reported EAS beside ours for the same models",
    "factor_regression": "RQ2, observational (confounded): EAS against each registry factor over the measured models",
    "self_speculation": "Lossless self-speculation per exit layer and draft length: acceptance, realised and lens-predicted speedup",
    "self_speculation_items": "Every prompt decoded by self-speculation: drafts proposed and accepted, costs, equal to greedy",
    "exit_head_similarity": "S_l on held-out prompts per model × workload × exit head (own, tuned lens, shuffled control)",
    "exit_head_eas": "EAS per exit head on held-out prompts, and the tuned lens's gain over the model's own head",
    "exit_heads": "Per exit head: the layer where top-1 agrees on half the tokens, oracle exits and their speedup bound",
    "tuned_lens_fit": "The tuned lens's fit per layer: training KL of the own head, the start and the kept translator",
}
STORE_TABLES = ("eas_scores", *STORE_TABLE_DESCRIPTIONS)


def _key(table: str) -> dg.AssetKey:
    return dg.AssetKey("eas_scores") if table == "eas_scores" else dg.AssetKey(["results_store", table])


def _check_name(table: str) -> str:
    return "eas_within_bounds" if table == "eas_scores" else f"{table}_rows_valid"


_SPECS = [
    dg.AssetSpec(_key("eas_scores"), group_name="results", kinds={"duckdb"}, deps=_UPSTREAM,
                 description="EAS per model × workload × metric × alpha (and per model); publishes the results store"),
    *(dg.AssetSpec(_key(table), group_name="results", kinds={"duckdb"}, deps=_UPSTREAM, description=description)
      for table, description in STORE_TABLE_DESCRIPTIONS.items()),
]
_CHECKS = [dg.AssetCheckSpec(_check_name(table), asset=_key(table),
                             description=(checks.STORE_TABLE_CHECKS[table].__doc__ or "").split("\n")[0] or f"{table} rows valid")
           for table in STORE_TABLES]


@dg.multi_asset(name="eas_scores", specs=_SPECS, check_specs=_CHECKS)
def eas_scores(context: dg.AssetExecutionContext, eexit: EexitResource, config: ScoresConfig):
    """EAS per model × workload × metric × alpha, then every store table in one transaction;
    each table is checked as it was stored."""
    ws = eexit.workspace
    scores, published = build_eas_scores(ws, config.score_settings(), model_ids=published_model_ids(ws),
                                          workload_ids=workload_partitions.get_partition_keys())
    for line in published.excluded:
        context.log.warning(f"not published: {line}")
        print(f"    not published: {line}", flush=True)  # the runner's console shows Dagster warnings only
    table = eas_table(scores)
    for name in STORE_TABLES:
        stored = store.read_table(ws.results_db, name)
        metadata: dict = {"rows": stored.height, "results_db": dg.MetadataValue.path(str(ws.results_db)),
                          "not_published": len(published.excluded)}
        if published.excluded:
            metadata["not_published_partitions"] = dg.MetadataValue.md("\n".join(f"- {x}" for x in published.excluded))
        if name == "eas_scores":
            metadata["eas_logit_cos_alpha_0.5"] = dg.MetadataValue.md(
                _markdown(table.select("model_id", "workload_id", "logit_cos", "eas_ideal", "eas_relative")))
        outcome = checks.STORE_TABLE_CHECKS[name](stored)
        yield dg.MaterializeResult(asset_key=_key(name), metadata=metadata)
        yield dg.AssetCheckResult(asset_key=_key(name), check_name=_check_name(name), passed=outcome.passed,
                                  metadata=outcome.metadata)


def _markdown(frame: pl.DataFrame) -> str:
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join(lines)
