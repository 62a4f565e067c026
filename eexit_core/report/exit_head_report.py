"""The report's section on learned exit heads (issue 25): per model, the held-out curves of
the model's own head, the tuned lens and the shuffled control, and the EAS gain."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402

_HEADS = (("own", "own head (logit lens)", "tab:blue"), ("tuned", "tuned lens", "tab:orange"),
          ("control", "shuffled control", "grey"))


def plot_heads(similarity: pl.DataFrame, target: Path, metric: str = "logit_cos") -> Path | None:
    """One panel per model: each head's curve of `metric` (mean over held-out tokens of
    every workload, token-weighted) and of top-1 agreement, against depth."""
    if similarity.is_empty():
        return None
    models = sorted(similarity["model_id"].unique().to_list())
    fig, axes = plt.subplots(2, len(models), figsize=(4.5 * len(models), 6.0), squeeze=False)
    for column, model_id in enumerate(models):
        part = similarity.filter(pl.col("model_id") == model_id)
        pooled = part.group_by("exit_head", "layer").agg(
            *((pl.col(c) * pl.col("n_tokens")).sum() / pl.col("n_tokens").sum() for c in (metric, "top1_match")),
            pl.col("depth_frac").first()).sort("layer")
        for row, stat in enumerate((metric, "top1_match")):
            ax = axes[row][column]
            for head, label, color in _HEADS:
                curve = pooled.filter(pl.col("exit_head") == head)
                ax.plot(curve["depth_frac"], curve[stat], label=label, color=color, marker=".")
            ax.set_xlabel("depth l / L")
            ax.set_ylabel(stat)
            ax.set_title(model_id, fontsize=9)
            ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, bbox_to_anchor=(0.5, -0.03))
    fig.tight_layout()
    from eexit_core.report.factor_report import _save

    return _save(fig, target)


def exit_head_sections(similarity: pl.DataFrame, scores: pl.DataFrame, heads: pl.DataFrame, out_dir: Path,
                       plots: list[Path], alpha: float = 0.5) -> list[str]:
    from eexit_core.report.factor_report import _md_table

    title = "## A learned exit head: the tuned lens beside the model's own head"
    if similarity.is_empty():
        return [title, "Not measured: run `python -m pipelines.run --stage tuned` (activation dumps, then a tuned lens "
                       "per model; it does not fit `make run`'s budget on a CPU), or materialise `layer_activations` "
                       "and `tuned_lens` in the UI."]
    plot = plot_heads(similarity, out_dir / "exit_heads.png")
    if plot is not None:
        plots.append(plot)
    eas = (scores.filter((pl.col("alpha") == alpha) & (pl.col("metric") == "logit_cos"))
           .pivot(on="exit_head", index=["model_id", "workload_id"], values="eas").sort("model_id", "workload_id"))
    eas = eas.with_columns((pl.col("tuned") - pl.col("own")).alias("tuned_gain"),
                           (pl.col("control") - pl.col("own")).alias("control_gain"))
    summary = heads.pivot(on="exit_head", index=["model_id", "workload_id"],
                          values=["half_agreement_layer", "speedup_bound", "speedup_bound_with_check"]).sort(
        "model_id", "workload_id")
    return [
        title,
        "Every head is read on the same held-out tokens: the prompts of each workload alternate between the half the "
        "tuned lens (an affine translator per layer in front of the model's own final norm and head, fitted to the "
        "final layer's distribution) is fitted on and the half reported here. The control is fitted the same way to "
        "shuffled token pairs; it can learn the marginal distribution and nothing about the token. "
        f"EAS under logit_cos at α = {alpha:g}:",
        _md_table(eas),
        "The first layer whose top-1 agrees with the final layer on half the tokens, and the token oracle's speedup "
        "bound (L over the mean first agreeing layer), without and with an exit check at every layer (the tuned "
        "head's check includes its d × d translator):",
        _md_table(summary),
        "![exit heads](exit_heads.png)",
    ]
