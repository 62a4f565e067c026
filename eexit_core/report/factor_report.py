"""The factor report: Markdown and PNG plots from the results store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402

from eexit_core import settings
from eexit_core.analysis.similarity import SIMILARITY_METRICS, similarity_curve  # noqa: E402
from eexit_core.storage import store  # noqa: E402
from eexit_core.storage.artifacts import atomic_path, write_text  # noqa: E402

DEFAULT_ALPHA = 0.5


@dataclass(frozen=True)
class Report:
    markdown: Path
    plots: list[Path]
    text: str


def _save(fig, target: Path) -> Path:
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return target


def plot_similarity_curves(similarity: pl.DataFrame, target: Path) -> Path:
    """One panel per model: S_l (mean over workloads) against depth, one line per metric."""
    models = sorted(similarity["model_id"].unique().to_list())
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4), squeeze=False)
    for ax, model_id in zip(axes[0], models):
        part = similarity.filter(pl.col("model_id") == model_id)
        for metric in SIMILARITY_METRICS:
            if part[metric].null_count() == part.height:  # not computed in this run
                continue
            curves = [
                (g.sort("layer")["depth_frac"].to_list(), similarity_curve(g, metric))
                for _, g in sorted(part.group_by("workload_id"), key=lambda group: group[0])  # a fixed summation order
            ]
            depth = curves[0][0]
            mean = [sum(c[1][i] for c in curves) / len(curves) for i in range(len(depth))]
            ax.plot(depth, mean, marker=".", label=metric)
        ax.set_title(model_id)
        ax.set_xlabel("depth fraction l / L")
        ax.set_ylabel("similarity to final layer S_l")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, bbox_to_anchor=(0.5, -0.08))
    return _save(fig, target)


def plot_eas(scores: pl.DataFrame, target: Path, metric: str = "logit_cos") -> Path:
    part = scores.filter((pl.col("metric") == metric) & (pl.col("alpha") == DEFAULT_ALPHA))
    pivot = part.pivot(on="model_id", index="workload_id", values="eas").sort("workload_id")
    models = [c for c in pivot.columns if c != "workload_id"]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * pivot.height), 4))
    width = 0.8 / max(len(models), 1)
    for i, model_id in enumerate(models):
        xs = [x + i * width for x in range(pivot.height)]
        ax.bar(xs, pivot[model_id].fill_null(0).to_list(), width=width, label=model_id)
    ideal = part["eas_ideal"].min()
    ax.axhline(ideal, color="grey", linestyle="--", linewidth=1, label=f"ideal (min L) {ideal:.3f}")
    ax.set_xticks([x + width * (len(models) - 1) / 2 for x in range(pivot.height)], pivot["workload_id"].to_list(), rotation=20)
    ax.set_ylabel(f"EAS ({metric}, α={DEFAULT_ALPHA})")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, target)


def plot_oracle(oracle: pl.DataFrame, target: Path) -> Path | None:
    if oracle.is_empty():
        return None
    labels = [f"{m}\n{w}" for m, w in oracle.filter(pl.col("criterion") == "first").select("model_id", "workload_id").iter_rows()]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(labels)), 4))
    for offset, criterion in ((0.0, "first"), (0.4, "stable")):
        values = oracle.filter(pl.col("criterion") == criterion).sort(["model_id", "workload_id"])["speedup_bound"].to_list()
        ax.bar([x + offset for x in range(len(values))], values, width=0.4, label=f"{criterion} match")
    ax.set_xticks([x + 0.2 for x in range(len(labels))], sorted(labels), fontsize=7, rotation=60)
    ax.set_ylabel("oracle speedup bound L / mean(exit layer)")
    ax.axhline(1.0, color="grey", linewidth=1)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, target)


_SIGNAL_MARKERS = {"max_prob": "o", "margin": "s", "entropy": "^", "saturation": "D"}


def _panels(n: int, width: float = 4.2, height: float = 3.4):
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat


def plot_exit_pareto(accuracy: pl.DataFrame, target: Path) -> Path | None:
    """Accuracy against mean layers used, one panel per model × workload: the static-exit
    curve, each dynamic policy, the never-exit baseline and the per-item oracle."""
    if accuracy.is_empty():
        return None
    groups = sorted(accuracy.select("model_id", "workload_id").unique().iter_rows())
    fig, axes = _panels(len(groups))
    for ax, (model_id, workload_id) in zip(axes, groups):
        part = accuracy.filter((pl.col("model_id") == model_id) & (pl.col("workload_id") == workload_id))
        n_layers = int(part["n_layers"][0])
        static = part.filter(pl.col("policy") == "static").sort("exit_layer")
        ax.plot(static["mean_layers"] / n_layers, static["accuracy"], color="black", marker=".", label="static exit")
        for signal, marker in _SIGNAL_MARKERS.items():
            dyn = part.filter(pl.col("signal") == signal).sort("mean_layers")
            if dyn.height:
                ax.plot(dyn["mean_layers"] / n_layers, dyn["accuracy"], marker=marker, linestyle=":", label=signal)
        for policy, marker, color in (("never_exit", "x", "grey"), ("oracle_item", "*", "red")):
            row = part.filter(pl.col("policy") == policy)
            if row.height:
                ax.scatter(row["mean_layers"] / n_layers, row["accuracy"], marker=marker, s=80, color=color, label=policy, zorder=3)
        ax.set_title(f"{model_id}\n{workload_id}", fontsize=9)
        ax.set_xlabel("mean layers used / L")
        ax.set_ylabel("accuracy")
        ax.set_xlim(0, 1.05)
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, bbox_to_anchor=(0.5, -0.04))
    fig.tight_layout()
    return _save(fig, target)


def _md_table(frame: pl.DataFrame, digits: int = 3) -> str:
    cols = frame.columns
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for row in frame.iter_rows():
        cells = [f"{v:.{digits}f}" if isinstance(v, float) else ("" if v is None else str(v)) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _exit_sections(db_path: Path, out_dir: Path, plots: list[Path]) -> list[str]:
    """RQ3 (Table 1), the dynamic-policy Pareto curves and RQ1, from the exit tables."""
    accuracy = _read_optional(db_path, "exit_accuracy")
    if accuracy.is_empty():
        return ["## Task accuracy under early exit", "No graded workload was evaluated (materialise `exit_accuracy`)."]
    bounds = _read_optional(db_path, "exit_skip_bounds")
    correlation = _read_optional(db_path, "similarity_accuracy_correlation")
    pareto = plot_exit_pareto(accuracy, out_dir / "exit_pareto.png")
    if pareto is not None:
        plots.append(pareto)
    tolerance = float(bounds["tolerance"][0]) if bounds.height else settings.TOLERANCE
    table1 = bounds.select(
        "model_id", "workload_id", "n_items", "full_accuracy", "max_skip_ratio", "max_skip_layer", "n_layers",
        "oracle_item_skip_ratio", "token_oracle_skip_ratio", "token_oracle_speedup", "token_oracle_speedup_with_check",
        "chance_accuracy", "note",
    ).sort(["model_id", "workload_id"]) if bounds.height else bounds
    static = (accuracy.filter(pl.col("policy") == "static")
              .with_columns((pl.col("model_id") + " × " + pl.col("workload_id")).alias("partition"))
              .pivot(on="partition", index="exit_layer", values="accuracy").sort("exit_layer"))
    dynamic = accuracy.filter(pl.col("policy") != "static").select(
        "model_id", "workload_id", "policy", "accuracy", "baseline_accuracy", "n_items", "mean_layers", "skip_ratio",
        "ms_per_token", "batch_size",
    ).sort(["model_id", "workload_id", "policy"])
    sections = [
        "## Task accuracy under early exit (RQ3, the paper's Table 1)",
        f"`max_skip_ratio` is the largest `(L − l)/L` over the evaluated static exit layers whose accuracy stays "
        f"≥ {1 - tolerance:.0%} of full-depth accuracy (tolerance {tolerance:g}, relative); it is undefined when full depth "
        "gets nothing right. `oracle_item_skip_ratio`: every item right at full depth exits at its own earliest static "
        "layer that is still right. `token_oracle_*`: the token-level first-match oracle from `oracle_exits`. "
        "For multiple choice, `chance_accuracy` is guessing; the note flags a full-depth accuracy that a one-sided "
        "binomial test does not separate from it (p > 0.05), where the skip ratio only measures noise.",
        _md_table(table1),
        "### Accuracy when every token exits at layer l",
        _md_table(static),
        "## Dynamic exit policies",
        "Per-token thresholds on the exit head's `max_prob`, `margin` (top-1 − top-2 probability), `entropy` (nats) "
        "and hidden-state saturation `cos(h_l, h_{l−1})`; skipped layers' KV filled by state propagation. "
        "`baseline_accuracy` is the `never_exit` decoding of the same items; `ms_per_token` is realised wall time "
        "(batch of one for the policies on generation; static generation is batched; for multiple choice every "
        "scored position of every choice runs in one pass, so its time is not a realised per-token cost).",
        "![accuracy against layers used](exit_pareto.png)",
        _md_table(dynamic),
    ]
    if correlation.height:
        best = correlation.filter(pl.col("best")).select("scope", "metric", "spearman", "ci_low", "ci_high").sort("scope")
        sections += [
            "## Does similarity predict accuracy under early exit? (RQ1)",
            "Spearman's ρ between `S_l` and accuracy at static exit `l` over the evaluated layers of each model × "
            "workload (`model|workload`), over every (workload, layer) point of a model, and pooled over models; "
            "the 95 % interval resamples items (1000 bootstrap draws, S_l held fixed). "
            "Workloads whose accuracy is the same at every evaluated layer (e.g. never solved) are left out "
            "(`n_workloads` counts those kept).",
            _md_table(correlation.select("scope", "metric", "spearman", "ci_low", "ci_high", "n_points", "n_workloads")
                      .sort(["scope", "metric"])),
            "Best-predicting metric per scope:",
            _md_table(best),
        ]
    return sections


ZOO_BAR = settings.LEARNED_LANGUAGE_NATS  # nats below the unigram entropy a base checkpoint must reach


def plot_zoo_losses(training: pl.DataFrame, target: Path) -> Path:
    """Validation loss over training tokens, a line per variant (seeds dashed after the
    first), with the unigram baseline and the learned-language bar below it."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    variants = sorted(training["variant"].unique().to_list())
    colours = plt.get_cmap("tab10")
    for i, variant in enumerate(variants):
        for j, seed in enumerate(sorted(training.filter(pl.col("variant") == variant)["seed"].unique().to_list())):
            run = training.filter((pl.col("variant") == variant) & (pl.col("seed") == seed)).sort("step")
            ax.plot(run["tokens"].to_list(), run["val_loss"].to_list(), color=colours(i % 10), marker="o", markersize=3,
                    linestyle="-" if j == 0 else "--", label=variant if j == 0 else None)
    unigram = training["unigram_entropy"].max()
    ax.axhline(unigram, color="grey", linewidth=1, label=f"unigram {unigram:.2f}")
    ax.axhline(unigram - ZOO_BAR, color="grey", linestyle=":", linewidth=1, label=f"unigram − {ZOO_BAR}")
    ax.set_xscale("symlog", linthresh=max(1, training.filter(pl.col("tokens") > 0)["tokens"].min() or 1))
    ax.set_xlabel("training tokens")
    ax.set_ylabel("validation loss (nats/token)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, target)


def plot_zoo_eas(over_training: pl.DataFrame, target: Path) -> Path:
    """EAS (logit_cos, α = 0.5, all workloads) of each checkpoint over training tokens."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colours = plt.get_cmap("tab10")
    for i, variant in enumerate(sorted(over_training["zoo_variant"].unique().to_list())):
        for j, seed in enumerate(sorted(over_training.filter(pl.col("zoo_variant") == variant)["seed"].unique().to_list())):
            run = over_training.filter((pl.col("zoo_variant") == variant) & (pl.col("seed") == seed)).sort("training_tokens")
            ax.plot(run["training_tokens"].to_list(), run["eas"].to_list(), color=colours(i % 10), marker="o",
                    markersize=3, linestyle="-" if j == 0 else "--", label=variant if j == 0 else None)
    positive = over_training.filter(pl.col("training_tokens") > 0)["training_tokens"]
    ax.set_xscale("symlog", linthresh=max(1, positive.min() or 1) if positive.len() else 1)
    ax.set_xlabel("training tokens")
    ax.set_ylabel(f"EAS (logit_cos, α={DEFAULT_ALPHA})")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, target)


def _zoo_sections(db_path: Path, out_dir: Path, plots: list[Path], scores: pl.DataFrame, models: pl.DataFrame) -> list[str]:
    """Training curves, EAS over training and the final checkpoints, once the zoo has trained."""
    training = _read_optional(db_path, "zoo_training")
    if training.height == 0:
        return []
    plots.append(plot_zoo_losses(training, out_dir / "zoo_losses.png"))
    zoo_models = models.filter(pl.col("zoo_variant").is_not_null()) if "zoo_variant" in models.columns else models.clear()
    eas = (scores.filter((pl.col("metric") == "logit_cos") & (pl.col("alpha") == DEFAULT_ALPHA)
                         & (pl.col("workload_id") == "ALL"))
           .join(zoo_models.select("model_id", "zoo_variant", "seed", "training_tokens"), on="model_id")
           .select("zoo_variant", "seed", "training_tokens", "eas"))
    from eexit_core.stages.zoo import last_checkpoints

    finals = (last_checkpoints(training)
              .join(eas.rename({"zoo_variant": "variant", "training_tokens": "tokens"}), on=["variant", "seed", "tokens"],
                    how="left")
              .select("variant", "seed", "tokens", "val_loss", "unigram_entropy", "below_unigram", "eas")
              .sort("variant", "seed"))
    sections = [
        "## The controlled zoo",
        "Variants trained here that differ in one factor at a time (eexit_core/zoo/). Validation loss over "
        f"training, against the corpus's unigram entropy; a base checkpoint has learned language {ZOO_BAR} nats "
        "below it.",
        "![zoo losses](zoo_losses.png)",
        f"Final checkpoints (EAS: logit_cos, α = {DEFAULT_ALPHA}, all workloads):",
        _md_table(finals),
    ]
    twins = finals.filter(pl.col("variant") == "zoo-dense-s-ee_aware").join(
        finals.filter(pl.col("variant") == "zoo-dense-s-base"), on="seed", suffix="_base")
    if twins.height:  # the positive control: early-exit-aware training should raise EAS
        sections += ["Early-exit-aware minus its base twin (the positive control):",
                     _md_table(twins.select("seed", (pl.col("eas") - pl.col("eas_base")).alias("eas_delta"),
                                            (pl.col("val_loss") - pl.col("val_loss_base")).alias("val_loss_delta")))]
    if eas.height:
        plots.append(plot_zoo_eas(eas, out_dir / "zoo_eas.png"))
        sections += ["EAS over training:", "![zoo EAS over training](zoo_eas.png)"]
    return sections


def _rq2_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """The report's view of an RQ2 table: logit_cos at the default alpha."""
    return frame.filter((pl.col("metric") == "logit_cos") & (pl.col("alpha") == DEFAULT_ALPHA))


def plot_contrasts(contrasts: pl.DataFrame, target: Path) -> Path:
    """Each one-factor difference pooled over workloads, with its 95 % interval."""
    rows = _rq2_rows(contrasts).filter(pl.col("workload_id") == "ALL").sort("factor", "level")
    fig, ax = plt.subplots(figsize=(7, 0.5 * rows.height + 1.2))
    labels = [f"{r['factor']}: {r['level'].removeprefix('zoo-')} − {r['baseline'].removeprefix('zoo-')}"
              for r in rows.iter_rows(named=True)]
    y = list(range(rows.height))
    delta = rows["delta"].to_numpy()
    errors = [delta - rows["ci_low"].to_numpy(), rows["ci_high"].to_numpy() - delta]
    ax.errorbar(delta, y, xerr=errors, fmt="o", capsize=3)
    ax.axvline(0, color="grey", linewidth=1)
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xlabel(f"Δ EAS (logit_cos, α={DEFAULT_ALPHA}, all workloads), 95 % interval over seeds and prompts")
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, target)


def plot_variance_share(variance: pl.DataFrame, target: Path) -> Path:
    """Stacked shares of per-prompt EAS variance per scope and metric (α = 0.5)."""
    rows = variance.filter((pl.col("alpha") == DEFAULT_ALPHA) & pl.col("share").is_not_null())
    groups = rows.select("scope", "metric").unique(maintain_order=True).sort("scope", "metric")
    fig, ax = plt.subplots(figsize=(7, 0.35 * groups.height + 1.2))
    left = [0.0] * groups.height
    for component, colour in zip(("model", "workload", "interaction", "residual"), ("C0", "C1", "C2", "C7"), strict=True):
        widths = [rows.filter((pl.col("scope") == g["scope"]) & (pl.col("metric") == g["metric"])
                              & (pl.col("component") == component))["share"].sum() for g in groups.iter_rows(named=True)]
        ax.barh(range(groups.height), widths, left=left, color=colour, label=component)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_yticks(range(groups.height), [f"{g['scope']} · {g['metric']}" for g in groups.iter_rows(named=True)], fontsize=7)
    ax.set_xlabel("share of per-prompt EAS variance")
    ax.legend(fontsize=7, ncols=4, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    return _save(fig, target)


def plot_training_dynamics(dynamics: pl.DataFrame, target: Path) -> Path:
    """EAS and half-depth top-1 agreement over training tokens, mean over seeds per variant."""
    rows = dynamics.filter(pl.col("metric") == "logit_cos")
    mean = rows.group_by("variant", "tokens").agg(pl.col("eas", "ci_low", "ci_high", "top1_at_half_depth").mean()).sort("tokens")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for i, variant in enumerate(sorted(mean["variant"].unique().to_list())):
        run = mean.filter(pl.col("variant") == variant)
        tokens = run["tokens"].to_list()
        left.plot(tokens, run["eas"].to_list(), marker="o", markersize=3, color=f"C{i % 10}", label=variant.removeprefix("zoo-"))
        left.fill_between(tokens, run["ci_low"].to_list(), run["ci_high"].to_list(), color=f"C{i % 10}", alpha=0.15)
        right.plot(tokens, run["top1_at_half_depth"].to_list(), marker="o", markersize=3, color=f"C{i % 10}")
    positive = mean.filter(pl.col("tokens") > 0)["tokens"]
    for ax, label in ((left, f"EAS (logit_cos, α={DEFAULT_ALPHA})"), (right, "top-1 agreement at half depth")):
        ax.set_xscale("symlog", linthresh=max(1, positive.min() or 1) if positive.len() else 1)
        ax.set_xlabel("training tokens")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    left.legend(fontsize=7)
    return _save(fig, target)


def plot_published(published: pl.DataFrame, scores: pl.DataFrame, models: pl.DataFrame, target: Path) -> Path:
    """The study's Figure 2 layout: EAS relative to the reference model by release date,
    its reported values beside ours (relative to our reference)."""
    import datetime as dt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    dates = [dt.date.fromisoformat(d) for d in published["release_date"]]
    ax.scatter(dates, published["eas_relative"].to_list(), marker="s", color="C1", label="study (reported)")
    for date, value, name in zip(dates, published["eas_relative"], published["model_name"], strict=True):
        ax.annotate(name, (date, value), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ours = (scores.filter((pl.col("workload_id") == "ALL") & (pl.col("metric") == "logit_cos") & (pl.col("alpha") == DEFAULT_ALPHA)
                          & pl.col("eas_relative").is_not_null())
            .join(models.filter(pl.col("zoo_variant").is_null() if "zoo_variant" in models.columns else pl.lit(True))
                  .select("model_id", "release_date"), on="model_id"))
    if ours.height:
        ax.scatter(ours["release_date"].to_list(), ours["eas_relative"].to_list(), marker="o", color="C0",
                   label=f"ours (relative to {ours['relative_to'][0] if 'relative_to' in ours.columns else 'the reference'})")
        for date, value, name in zip(ours["release_date"], ours["eas_relative"], ours["model_id"], strict=True):
            ax.annotate(name, (date, value), fontsize=6, xytext=(3, -8), textcoords="offset points")
    ax.axhline(1.0, color="grey", linewidth=1)
    fig.autofmt_xdate()
    ax.set_ylabel("EAS relative to the reference model")
    ax.set_xlabel("release date")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, target)


def _shown_models(models: pl.DataFrame) -> list[str]:
    """The models the report lists one by one: every registered model and each zoo
    variant and seed at its last checkpoint (the tables hold every checkpoint)."""
    if "zoo_variant" not in models.columns:
        return models["model_id"].to_list()
    registered = models.filter(pl.col("zoo_variant").is_null())["model_id"].to_list()
    finals = (models.filter(pl.col("zoo_variant").is_not_null()).sort("training_tokens")
              .group_by("zoo_variant", "seed").last()["model_id"].to_list())
    return sorted(registered + finals)


def _factor_sections(db_path: Path, out_dir: Path, plots: list[Path], scores: pl.DataFrame, models: pl.DataFrame) -> list[str]:
    """RQ2: EAS intervals, the zoo's contrasts, variance shares, training dynamics, the
    published values and a verdict on each of the study's findings."""
    from eexit_core.analysis.findings import check_findings, findings_table

    intervals = _read_optional(db_path, "eas_intervals")
    if intervals.height == 0:
        return []
    contrasts, variance = _read_optional(db_path, "factor_contrasts"), _read_optional(db_path, "variance_share")
    dynamics, published = _read_optional(db_path, "training_dynamics"), _read_optional(db_path, "published_eas")
    shown = _shown_models(models)
    per_model = (_rq2_rows(intervals).filter((pl.col("workload_id") == "ALL") & pl.col("model_id").is_in(shown))
                 .select("model_id", "eas", "ci_low", "ci_high", "n_prompts").sort("model_id"))
    sections = ["## RQ2: which factors move EAS",
                f"EAS (logit_cos, α = {DEFAULT_ALPHA}, mean over workloads) with a bootstrap 95 % interval that resamples "
                f"prompts within each workload ({intervals['n_boot'][0]} replicates, seed {intervals['bootstrap_seed'][0]}); "
                "`eas_intervals` holds every metric, alpha and workload (and every zoo checkpoint; the zoo's last "
                "ones are listed here).", _md_table(per_model)]
    oracle = _read_optional(db_path, "oracle_intervals")
    if oracle.height:
        sections += ["Token-oracle speedup bounds (`first` criterion) with the same prompt bootstrap:",
                     _md_table(oracle.filter((pl.col("criterion") == "first") & pl.col("model_id").is_in(shown))
                               .select("model_id", "workload_id", "speedup_bound", "ci_low", "ci_high", "skip_ratio")
                               .sort("model_id", "workload_id"))]
    if contrasts.height:
        plots.append(plot_contrasts(contrasts, out_dir / "factor_contrasts.png"))
        sections += ["### Controlled contrasts (the zoo)",
                     "Each variant minus the one it differs from in one factor, paired by seed and by prompt; the "
                     "interval redraws the seeds and the prompts (a two-level bootstrap).",
                     _md_table(_rq2_rows(contrasts).filter(pl.col("workload_id") == "ALL")
                               .select("factor", "level", "baseline", "delta", "ci_low", "ci_high", "n_pairs")),
                     "![factor contrasts](factor_contrasts.png)"]
    if variance.filter(pl.col("share").is_not_null()).height:
        plots.append(plot_variance_share(variance, out_dir / "variance_share.png"))
        sections += ["### Variance share: model against workload",
                     "Per-prompt EAS decomposed into model, workload, their interaction and the prompts within a "
                     "model × workload cell (sequential sums of squares, model first).",
                     _md_table(_rq2_rows(variance).select("scope", "component", "df", "share", "n_models", "n_workloads")),
                     "![variance share](variance_share.png)"]
    regression = _read_optional(db_path, "factor_regression")
    if regression.height:
        sections += ["### Observational: EAS against the registry's factors",
                     "Every measured registered model, one factor at a time; these models differ in many factors at "
                     "once, so a slope here is confounded.",
                     _md_table(regression.select("factor", "term", "estimate", "ci_low", "ci_high", "n_models", "note"))]
    if dynamics.height:
        plots.append(plot_training_dynamics(dynamics, out_dir / "training_dynamics.png"))
        sections += ["### Training dynamics", "![training dynamics](training_dynamics.png)"]
    if published.height:
        plots.append(plot_published(published, scores, models, out_dir / "published_eas.png"))
        sections += ["### The study's values beside ours",
                     _md_table(published.select("model_name", "eas", "eas_relative", "release_date", "measured_eas",
                                                "measured_ci_low", "measured_ci_high")),
                     f"_{published['note'][0]}._", "![published EAS](published_eas.png)"]
    sections += ["### The study's findings, checked",
                 _md_table(findings_table(check_findings(contrasts, variance, models, scores)))]
    return sections


def _speculation_sections(db_path: Path, out_dir: Path, plots: list[Path], oracle: pl.DataFrame) -> list[str]:
    from eexit_core.report.speculation_report import speculation_sections

    bounds = _read_optional(db_path, "exit_skip_bounds")
    tolerance = float(bounds["tolerance"][0]) if bounds.height else settings.TOLERANCE
    return speculation_sections(_read_optional(db_path, "self_speculation"), oracle, _read_optional(db_path, "exit_accuracy"),
                                tolerance, out_dir, plots)


def _exit_head_sections(db_path: Path, out_dir: Path, plots: list[Path]) -> list[str]:
    from eexit_core.report.exit_head_report import exit_head_sections

    return exit_head_sections(_read_optional(db_path, "exit_head_similarity"), _read_optional(db_path, "exit_head_eas"),
                              _read_optional(db_path, "exit_heads"), out_dir, plots, DEFAULT_ALPHA)


def _read_optional(db_path: Path, table: str) -> pl.DataFrame:
    try:
        return store.read_table(db_path, table)
    except duckdb.CatalogException:  # an older store without the table
        return pl.DataFrame()


def build_report(db_path: Path, out_dir: Path) -> Report:
    scores = store.read_table(db_path, "eas_scores")
    similarity = store.read_table(db_path, "layer_similarity")
    oracle = store.read_table(db_path, "oracle_exits")
    models = store.read_table(db_path, "models")
    plots = [
        p for p in (
            plot_similarity_curves(similarity, out_dir / "similarity_curves.png"),
            plot_eas(scores, out_dir / "eas_by_workload.png"),
            plot_oracle(oracle, out_dir / "oracle_speedup.png"),
        ) if p is not None
    ]
    at_alpha = scores.filter(pl.col("alpha") == DEFAULT_ALPHA)
    per_model = (
        at_alpha.filter(pl.col("workload_id") == "ALL")
        .pivot(on="metric", index="model_id", values="eas")
        .join(at_alpha.filter((pl.col("workload_id") == "ALL") & (pl.col("metric") == "logit_cos"))
              .select("model_id", "eas_ideal", "eas_relative", "relative_to", "n_tokens"), on="model_id")
        .join(models.select("model_id", "family", "arch_class", "n_layers", "training", "quantization"), on="model_id", how="left")
        .sort("model_id")
    )
    per_workload = (
        at_alpha.filter((pl.col("metric") == "logit_cos") & (pl.col("workload_id") != "ALL"))
        .pivot(on="model_id", index="workload_id", values="eas").sort("workload_id")
    )
    oracle_table = oracle.select("model_id", "workload_id", "criterion", "mean_exit_layer", "skip_ratio",
                                 "speedup_bound", "speedup_bound_with_check", "n_tokens").sort(["model_id", "workload_id", "criterion"])
    unavailable = models.filter(pl.col("available") == False)  # noqa: E712
    text = "\n\n".join([
        "# eexit factor report",
        f"EAS at α = {DEFAULT_ALPHA} per model (mean over workloads), under every similarity metric. "
        "The default metric is `logit_cos` (mean-centred logit cosine, clipped to [0, 1]); "
        "`eas_ideal` is the score of a model whose every layer already matches the final one.",
        _md_table(per_model),
        "## EAS by workload (`logit_cos`)",
        _md_table(per_workload),
        "![EAS by workload](eas_by_workload.png)",
        "## Layer-to-final similarity curves",
        "Mean over workloads; x is depth l / L.",
        "![similarity curves](similarity_curves.png)",
        "## Oracle exits (token level)",
        "`first`: the first layer whose top-1 equals the final top-1; `stable`: the first layer from which all later "
        "layers agree. `speedup_bound = L / mean(exit)` (cost ∝ blocks run); `speedup_bound_with_check` adds "
        "the exit head's cost at every layer up to the exit.",
        _md_table(oracle_table),
        "![oracle speedup](oracle_speedup.png)",
        *_exit_sections(db_path, out_dir, plots),
        *_speculation_sections(db_path, out_dir, plots, oracle),
        *_exit_head_sections(db_path, out_dir, plots),
        *_zoo_sections(db_path, out_dir, plots, scores, models),
        *_factor_sections(db_path, out_dir, plots, scores, models),
        "## Models not measured",
        _md_table(unavailable.select("model_id", "unavailable_reason")) if unavailable.height else "All selected models were available.",
    ]) + "\n"
    markdown = write_text(text, out_dir / "factor_report.md")
    return Report(markdown, plots, text)
