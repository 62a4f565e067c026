"""The report's section on what early exit realises (issue 16): per model and decoded
workload, the token-oracle bound, the best lossy dynamic policy within the accuracy
tolerance, lossless self-speculation (chosen on half the prompts, measured on the other)
and the speedup the lens predicted for it."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402

from eexit_core.analysis.exit_summary import NEVER_EXIT  # noqa: E402
from eexit_core.analysis.speculation import TEST  # noqa: E402

_KEYS = ["model_id", "workload_id"]


def best_lossy_policy(accuracy: pl.DataFrame, tolerance: float) -> pl.DataFrame:
    """Per model × workload, the dynamic policy with the highest realised speedup over its
    `never_exit` decoding (ms per token, batch of one) among those whose accuracy stays
    within `tolerance` of it; none where full depth gets nothing right (relative accuracy
    undefined) or no policy keeps the accuracy."""
    schema = {"model_id": pl.String, "workload_id": pl.String, "lossy_policy": pl.String,
              "lossy_relative_accuracy": pl.Float64, "lossy_realised_speedup": pl.Float64}
    if accuracy.is_empty():
        return pl.DataFrame(schema=schema)
    baseline = accuracy.filter(pl.col("policy") == NEVER_EXIT).select(*_KEYS, pl.col("ms_per_token").alias("_never_ms"))
    return (
        accuracy.filter(pl.col("signal").is_not_null() & (pl.col("relative_accuracy") >= 1 - tolerance))
        .join(baseline, on=_KEYS)
        .with_columns((pl.col("_never_ms") / pl.col("ms_per_token")).alias("lossy_realised_speedup"))
        .sort("lossy_realised_speedup", descending=True)
        .group_by(_KEYS, maintain_order=True).first()
        .select(*_KEYS, pl.col("policy").alias("lossy_policy"), pl.col("relative_accuracy").alias("lossy_relative_accuracy"),
                "lossy_realised_speedup")
    )


def side_by_side(speculation: pl.DataFrame, oracle: pl.DataFrame, accuracy: pl.DataFrame, tolerance: float) -> pl.DataFrame:
    """One row per model × workload with self-speculation: the bound, the lossy and the
    lossless realised speedups, the lens prediction and its relative error."""
    chosen = speculation.filter(pl.col("chosen") & (pl.col("split") == TEST)).select(
        *_KEYS, "exit_layer", "draft_len", "first_acceptance", "lens_acceptance",
        pl.col("realised_speedup").alias("lossless_realised_speedup"),
        pl.col("predicted_speedup").alias("lens_predicted_speedup"), "prediction_error")
    bound = oracle.filter(pl.col("criterion") == "first").select(*_KEYS, pl.col("speedup_bound").alias("oracle_speedup_bound"))
    return (chosen.join(bound, on=_KEYS, how="left")
            .join(best_lossy_policy(accuracy, tolerance), on=_KEYS, how="left")
            .select(*_KEYS, "oracle_speedup_bound", "lossy_policy", "lossy_relative_accuracy", "lossy_realised_speedup",
                    "exit_layer", "draft_len", "first_acceptance", "lens_acceptance", "lossless_realised_speedup",
                    "lens_predicted_speedup", "prediction_error")
            .sort(_KEYS))


def plot_realised(table: pl.DataFrame, target: Path) -> Path | None:
    """Grouped bars per workload, one panel per model: the bound, the best lossy policy,
    lossless self-speculation and the lens's prediction of it; 1 is greedy decoding."""
    if table.is_empty():
        return None
    models = sorted(table["model_id"].unique().to_list())
    bars = (("oracle_speedup_bound", "token-oracle bound", "lightgrey"),
            ("lossy_realised_speedup", "best lossy policy (realised)", "tab:orange"),
            ("lossless_realised_speedup", "self-speculation (realised)", "tab:blue"),
            ("lens_predicted_speedup", "self-speculation (lens-predicted)", "tab:cyan"))
    fig, axes = plt.subplots(1, len(models), figsize=(5.0 * len(models), 3.6), squeeze=False)
    for ax, model_id in zip(axes[0], models):
        part = table.filter(pl.col("model_id") == model_id).sort("workload_id")
        positions = range(part.height)
        width = 0.8 / len(bars)
        for i, (column, label, color) in enumerate(bars):
            values = [v if v is not None else 0.0 for v in part[column].to_list()]
            ax.bar([p + (i - 1.5) * width for p in positions], values, width, label=label, color=color)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(list(positions), part["workload_id"].to_list(), fontsize=8)
        ax.set_ylabel("speedup over greedy decoding")
        ax.set_title(model_id, fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, bbox_to_anchor=(0.5, -0.06))
    fig.tight_layout()
    from eexit_core.report.factor_report import _save

    return _save(fig, target)


def speculation_sections(speculation: pl.DataFrame, oracle: pl.DataFrame, accuracy: pl.DataFrame, tolerance: float,
                         out_dir: Path, plots: list[Path]) -> list[str]:
    from eexit_core.report.factor_report import _md_table

    title = "## What early exit realises: lossless self-speculation beside the bound and the lossy policies"
    if speculation.is_empty():
        return [title, "Not measured: run `python -m pipelines.run --stage speculation` (it does not fit `make run`'s "
                       "budget on a CPU), or materialise `self_speculation_items` in the UI."]
    table = side_by_side(speculation, oracle, accuracy, tolerance)
    plot = plot_realised(table, out_dir / "self_speculation.png")
    if plot is not None:
        plots.append(plot)
    per_config = speculation.filter(pl.col("split") == TEST).select(
        *_KEYS, "exit_layer", "draft_len", "first_acceptance", "lens_acceptance", "mean_accepted", "draft_step_cost",
        "verify_cost", "realised_speedup", "predicted_speedup", "chosen").sort([*_KEYS, "exit_layer", "draft_len"])
    return [
        title,
        "Every speedup is against greedy full-depth decoding of the same prompts in the same process (batch of one). "
        "`oracle_speedup_bound`: L over the mean first layer whose top-1 is the final one (`oracle_exits`). "
        f"The lossy policy is the fastest dynamic exit rule whose accuracy stays within {tolerance:g} (relative) of its "
        "never-exit decoding (none where full depth gets nothing right). Self-speculation drafts k tokens from layer l "
        "through the exit head and verifies them in one full-depth pass, so its tokens are greedy decoding's (checked "
        "on every item); its (l, k) is the fastest on the `tune` half of the prompts and reported on the `test` half. "
        "The lens predicts it from `layer_similarity.top1_match` at l as the acceptance p: (1 + p + … + p^k) tokens per "
        "round over k draft steps and one verify pass, costed as measured here; `prediction_error` is predicted / "
        "realised − 1.",
        _md_table(table),
        "![realised speedups](self_speculation.png)",
        "Every (l, k) on the test half (costs in greedy decode steps):",
        _md_table(per_config),
    ]
