"""The study's five findings, each checked against our tables (RQ2, issue 15).

A finding about a direction is decided by the 95 % interval of the contrast that tests it
(logit_cos, α = 0.5, pooled over workloads): *reproduced* when the whole interval lies on
the side the study reports, *contradicted* when it lies on the other side, *inconclusive*
when it spans zero, and *not testable with the models measured* when no measured pair
differs in that factor alone. The workload finding is decided by the variance share:
weak when the workload (with its interaction) explains under `WEAK_SHARE` of the
per-prompt variance and less than the model does.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

WEAK_SHARE = 0.10
METRIC, ALPHA = "logit_cos", 0.5


@dataclass(frozen=True)
class Finding:
    claim: str
    verdict: str  # reproduced | contradicted | inconclusive | not testable with the models measured
    evidence: str


def _direction(contrasts: pl.DataFrame, factor: str, levels: list[str] | None, sign: int, claim: str) -> Finding:
    """Decide a claim that `level - baseline` has the sign `sign` for every matching contrast."""
    if contrasts.height == 0:
        return Finding(claim, "not testable with the models measured", "no zoo contrasts were measured")
    rows = contrasts.filter((pl.col("factor") == factor) & (pl.col("workload_id") == "ALL")
                            & (pl.col("metric") == METRIC) & (pl.col("alpha") == ALPHA))
    if levels is not None:
        rows = rows.filter(pl.col("level").is_in(levels))
    if rows.height == 0:
        return Finding(claim, "not testable with the models measured", f"no {factor} contrast was measured")
    parts, verdicts = [], set()
    for row in rows.sort("level").iter_rows(named=True):
        low, high = sign * row["ci_low"], sign * row["ci_high"]
        low, high = min(low, high), max(low, high)
        verdicts.add("reproduced" if low > 0 else "contradicted" if high < 0 else "inconclusive")
        parts.append(f"{row['level']} − {row['baseline']}: {row['delta']:+.3f} [{row['ci_low']:+.3f}, "
                     f"{row['ci_high']:+.3f}] ({row['n_pairs']} seeds)")
    verdict = verdicts.pop() if len(verdicts) == 1 else "inconclusive"
    return Finding(claim, verdict, "; ".join(parts))


def _generations(models: pl.DataFrame, scores: pl.DataFrame) -> Finding:
    claim = "newer generations have lower EAS"
    if models.height == 0 or "generation" not in models.columns:
        return Finding(claim, "not testable with the models measured", "no registry models were measured")
    measured = (scores.filter((pl.col("workload_id") == "ALL") & (pl.col("metric") == METRIC) & (pl.col("alpha") == ALPHA))
                .join(models.filter(pl.col("zoo_variant").is_null() if "zoo_variant" in models.columns else pl.lit(True))
                      .select("model_id", "family", "generation"), on="model_id"))
    families = (measured.filter(pl.col("generation").is_not_null())
                .group_by("family").agg(pl.col("generation").n_unique().alias("n")).filter(pl.col("n") > 1))
    if families.height == 0:
        return Finding(claim, "not testable with the models measured",
                       "no family has two generations measured (the zoo holds none: generation is not a zoo factor)")
    parts = []
    for family in sorted(families["family"].to_list()):
        rows = measured.filter(pl.col("family") == family).sort("generation")
        parts.append(f"{family}: " + ", ".join(f"gen {g} {e:.3f}" for g, e in zip(rows["generation"], rows["eas"], strict=True)))
    return Finding(claim, "inconclusive", "observational only (no interval across models): " + "; ".join(parts))


def _workload(variance: pl.DataFrame) -> Finding:
    claim = "the workload affects EAS only weakly"
    if variance.height == 0:
        return Finding(claim, "not testable with the models measured", "no variance decomposition was stored")
    rows = variance.filter((pl.col("metric") == METRIC) & (pl.col("alpha") == ALPHA) & pl.col("share").is_not_null())
    if rows.height == 0:
        return Finding(claim, "not testable with the models measured", "fewer than two models or workloads measured")
    parts, verdicts = [], set()
    for scope in sorted(rows["scope"].unique().to_list()):
        share = dict(rows.filter(pl.col("scope") == scope).select("component", "share").iter_rows())
        workload = share.get("workload", 0.0) + share.get("interaction", 0.0)
        verdicts.add("reproduced" if workload < WEAK_SHARE and workload < share.get("model", 0.0) else "contradicted")
        parts.append(f"{scope}: workload {share.get('workload', 0.0):.1%} + interaction {share.get('interaction', 0.0):.1%}"
                     f" against model {share.get('model', 0.0):.1%}")
    return Finding(claim, verdicts.pop() if len(verdicts) == 1 else "inconclusive", "; ".join(parts))


def check_findings(contrasts: pl.DataFrame, variance: pl.DataFrame, models: pl.DataFrame,
                   scores: pl.DataFrame) -> list[Finding]:
    """A verdict for each of the study's five findings."""
    arch_levels = [lvl for lvl in contrasts["level"].unique().to_list() if "-moe-" in lvl or "-ssm-" in lvl] \
        if contrasts.height else []
    return [
        _generations(models, scores),
        _direction(contrasts, "arch_class", arch_levels, -1, "dense models have higher EAS than MoE and SSM models"),
        _direction(contrasts, "size", None, +1, "larger models have higher EAS"),
        _direction(contrasts, "recipe", [lvl for lvl in contrasts["level"].unique().to_list() if "-instruct" in lvl]
                   if contrasts.height else [], -1, "post-training (and continued pre-training) lowers EAS"),
        _workload(variance),
    ]


def findings_table(findings: list[Finding]) -> pl.DataFrame:
    return pl.DataFrame([{"finding": f.claim, "verdict": f.verdict, "evidence": f.evidence} for f in findings],
                        schema={"finding": pl.String, "verdict": pl.String, "evidence": pl.String})
