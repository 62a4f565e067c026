import dagster as dg
import polars as pl

from assets.config import ScoresConfig
from assets.resources import EexitResource
from eexit_core.analysis import checks
from eexit_core.stages import build_eas_scores, eas_table
from eexit_core.storage import store


@dg.asset(group_name="results", kinds={"duckdb"},
          deps=["layer_similarity", "oracle_exits", "exit_accuracy", "model_checkpoints", "workload_prompts"])
def eas_scores(eexit: EexitResource, config: ScoresConfig) -> dg.MaterializeResult:
    """EAS per model × workload × metric × alpha (and per model); publishes the results store."""
    scores = build_eas_scores(eexit.workspace, config.score_settings())
    table = eas_table(scores)
    return dg.MaterializeResult(
        metadata={
            "rows": scores.height,
            "results_db": dg.MetadataValue.path(str(eexit.workspace.results_db)),
            "eas_logit_cos_alpha_0.5": dg.MetadataValue.md(
                _markdown(table.select("model_id", "workload_id", "logit_cos", "eas_ideal", "eas_relative"))),
        }
    )


def _markdown(frame: pl.DataFrame) -> str:
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join(lines)


@dg.asset_check(asset=eas_scores, description="EAS finite and within [0, eas_ideal]; an ALL row per model")
def eas_within_bounds(eexit: EexitResource) -> dg.AssetCheckResult:
    outcome = checks.eas_in_range(store.read_table(eexit.workspace.results_db, "eas_scores"))
    return dg.AssetCheckResult(passed=outcome.passed, metadata=outcome.metadata)
