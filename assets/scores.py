import dagster as dg
import polars as pl

from eexit_core import store
from eexit_core.stages import build_eas_scores, eas_table
from pipelines.resources import EexitResource


@dg.asset(group_name="results", kinds={"duckdb"}, deps=["layer_similarity", "oracle_exits", "exit_accuracy", "model_checkpoints", "workload_prompts"])
def eas_scores(eexit: EexitResource) -> dg.MaterializeResult:
    """EAS per model × workload × metric × alpha (and per model); publishes the results store."""
    scores = build_eas_scores(eexit.workspace, eexit.score_settings())
    table = eas_table(scores)
    return dg.MaterializeResult(
        metadata={
            "rows": scores.height,
            "results_db": dg.MetadataValue.path(str(eexit.workspace.results_db)),
            "eas_logit_cos_alpha_0.5": dg.MetadataValue.md(_markdown(table.select("model_id", "workload_id", "logit_cos", "eas_ideal", "eas_relative"))),
        }
    )


def _markdown(frame: pl.DataFrame) -> str:
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join(lines)


def _sql(eexit: EexitResource, sql: str) -> pl.DataFrame:
    return store.query(eexit.workspace.results_db, sql)


@dg.asset_check(asset=eas_scores, description="EAS finite and within [0, eas_ideal]")
def eas_within_bounds(eexit: EexitResource) -> dg.AssetCheckResult:
    bad = _sql(eexit, "select * from eas_scores where not isfinite(eas) or eas < 0 or eas > eas_ideal + 1e-9")
    return dg.AssetCheckResult(passed=bad.height == 0, metadata={"violations": bad.height})


@dg.asset_check(asset=eas_scores, description="layer similarities finite and in range")
def similarities_in_range(eexit: EexitResource) -> dg.AssetCheckResult:
    bad = _sql(eexit, """
        select * from layer_similarity where
            not (top1_match between 0 and 1) or not (topk_overlap between 0 and 1)
            or not (kl_to_final >= 0) or not isfinite(kl_to_final)
            or not (logit_cos between -1.0001 and 1.0001) or not (hidden_cos between -1.0001 and 1.0001)
            or not (depth_frac > 0 and depth_frac <= 1)""")
    return dg.AssetCheckResult(passed=bad.height == 0, metadata={"violations": bad.height})


@dg.asset_check(asset=eas_scores, description="oracle exit layers within 1..L")
def exit_layers_in_range(eexit: EexitResource) -> dg.AssetCheckResult:
    bad = _sql(eexit, """
        select * from oracle_exits where not (mean_exit_layer >= 1 and mean_exit_layer <= n_layers)
            or not (speedup_bound >= 1) or not isfinite(speedup_bound)""")
    return dg.AssetCheckResult(passed=bad.height == 0, metadata={"violations": bad.height})


@dg.asset_check(asset=eas_scores, description="expected row counts: L layers per partition, ALL rows per model")
def expected_row_counts(eexit: EexitResource) -> dg.AssetCheckResult:
    layer_gaps = _sql(eexit, """
        select s.model_id, s.workload_id, count(*) as n, max(m.n_layers) as expected
        from layer_similarity s join models m using (model_id)
        group by 1, 2 having count(*) <> max(m.n_layers) or max(s.layer) <> max(m.n_layers)""")
    missing_all = _sql(eexit, """
        select distinct model_id from eas_scores
        except select distinct model_id from eas_scores where workload_id = 'ALL'""")
    passed = layer_gaps.height == 0 and missing_all.height == 0
    return dg.AssetCheckResult(passed=passed, metadata={"partitions_with_wrong_layer_count": layer_gaps.height, "models_without_ALL": missing_all.height})


@dg.asset_check(asset=eas_scores, description="exit accuracy in [0, 1], layers used within 1..L, full depth present")
def exit_accuracy_in_range(eexit: EexitResource) -> dg.AssetCheckResult:
    bad = _sql(eexit, """
        select * from exit_accuracy where not (accuracy between 0 and 1)
            or not (mean_layers >= 1 and mean_layers <= n_layers) or not (skip_ratio between 0 and 1)""")
    no_full = _sql(eexit, """
        select model_id, workload_id from exit_accuracy group by 1, 2
        having count(*) filter (where policy = 'static' and exit_layer = n_layers) <> 1""")
    return dg.AssetCheckResult(passed=bad.height == 0 and no_full.height == 0,
                               metadata={"violations": bad.height, "partitions_without_full_depth": no_full.height})
