"""What lossless self-speculation realised, and what the lens predicted it would (torch-free).

The `self_speculation_items` table keeps one row per prompt × (exit layer l, draft length
k): the drafts proposed and accepted at each position of a round, the verify passes, the
wall time of the drafts and of the verify passes, and plain greedy decoding of the same
prompt in the same process. `summarise_speculation` turns them into `self_speculation`:
per model × workload × (l, k) × half of the prompts, the acceptance per draft position,
the realised speedup over greedy decoding, and the speedup the lens predicts from
`layer_similarity`'s top-1 agreement at l and the costs measured here. The best (l, k)
is chosen on the `tune` half of the prompts and reported on the `test` half.

The prediction treats each draft as accepted independently with probability p, the lens's
top-1 agreement of layer l with the last layer: a round yields 1 + p + ... + p^k tokens
(the accepted prefix plus the verifier's own token) and costs k draft steps and one verify
pass, each in units of one greedy decode step.
"""

from __future__ import annotations

import polars as pl

TUNE, TEST = "tune", "test"

ITEM_SCHEMA = {
    "model_id": pl.String, "workload_id": pl.String, "prompt_id": pl.String, "split": pl.String,
    "exit_layer": pl.Int32, "draft_len": pl.Int32, "n_layers": pl.Int32, "n_tokens": pl.Int64,
    "verify_passes": pl.Int64, "drafted_at": pl.List(pl.Int64), "accepted_at": pl.List(pl.Int64),
    "draft_blocks": pl.Int64, "verify_blocks": pl.Int64, "draft_s": pl.Float64, "verify_s": pl.Float64,
    "decode_s": pl.Float64, "greedy_tokens": pl.Int64, "greedy_s": pl.Float64, "matches_greedy": pl.Boolean,
}

SUMMARY_SCHEMA = {
    "model_id": pl.String, "workload_id": pl.String, "exit_layer": pl.Int32, "draft_len": pl.Int32,
    "split": pl.String, "n_layers": pl.Int32, "n_prompts": pl.Int64, "n_tokens": pl.Int64,
    "acceptance": pl.List(pl.Float64), "first_acceptance": pl.Float64, "mean_accepted": pl.Float64,
    "blocks_per_token": pl.Float64, "ms_per_token": pl.Float64, "greedy_ms_per_token": pl.Float64,
    "realised_speedup": pl.Float64, "draft_step_cost": pl.Float64, "verify_cost": pl.Float64,
    "lens_acceptance": pl.Float64, "predicted_speedup": pl.Float64, "prediction_error": pl.Float64,
    "lossless": pl.Boolean, "chosen": pl.Boolean,
}


def expected_tokens_per_round(acceptance: float, draft_len: int) -> float:
    """Tokens a round yields when each draft is accepted with probability `acceptance`
    independently, given the ones before it: the accepted prefix plus the verifier's own
    token, 1 + p + p^2 + ... + p^k."""
    if not 0.0 <= acceptance <= 1.0:
        raise ValueError(f"acceptance is a probability, got {acceptance}")
    return float(sum(acceptance**i for i in range(draft_len + 1)))


def speedup_from_costs(acceptance: float, *, draft_len: int, draft_step: float, verify_cost: float) -> float:
    """Tokens per round over the round's cost, in greedy decode steps: a draft step costs
    `draft_step` of one, a verify pass over k + 1 tokens `verify_cost`."""
    return expected_tokens_per_round(acceptance, draft_len) / (draft_len * draft_step + verify_cost)


def predicted_speedup(acceptance: float, *, exit_layer: int, n_layers: int, draft_len: int, head_cost: float = 0.0,
                      verify_cost: float = 1.0) -> float:
    """The speedup over greedy decoding from a cost model with no measurement: a draft step
    costs `exit_layer / n_layers` of a full step plus the exit head (`head_cost`, relative
    to a full step); a verify pass over k + 1 tokens costs `verify_cost` full steps (1 where
    decoding is memory-bound, as at batch 1 on a GPU; up to k + 1 where it is compute-bound,
    as on a CPU: `summarise_speculation` measures both)."""
    if not 1 <= exit_layer < n_layers:
        raise ValueError(f"the exit layer must be in 1..{n_layers - 1}, got {exit_layer}")
    return speedup_from_costs(acceptance, draft_len=draft_len, draft_step=exit_layer / n_layers + head_cost,
                              verify_cost=verify_cost)


_CONFIG = ["model_id", "workload_id", "exit_layer", "draft_len"]


def summarise_speculation(items: pl.DataFrame, similarity: pl.DataFrame) -> pl.DataFrame:
    """`self_speculation` from its items and `layer_similarity` (for the lens's top-1
    agreement at each exit layer; null where the stats lack it)."""
    if items.is_empty():
        return pl.DataFrame(schema=SUMMARY_SCHEMA)
    per_position = (
        items.select(*_CONFIG, "split", "prompt_id", "drafted_at", "accepted_at")
        .explode("drafted_at", "accepted_at")
        .with_columns(pl.int_range(pl.len()).over([*_CONFIG, "split", "prompt_id"]).alias("position"))
        .group_by([*_CONFIG, "split", "position"])
        .agg(pl.col("drafted_at").sum(), pl.col("accepted_at").sum())
        .sort("position")
        .group_by([*_CONFIG, "split"])
        .agg((pl.col("accepted_at") / pl.col("drafted_at")).fill_nan(None).alias("acceptance"))
    )
    summary = (
        items.group_by([*_CONFIG, "split"])
        .agg(
            pl.col("n_layers").first(), pl.len().cast(pl.Int64).alias("n_prompts"), pl.col("n_tokens").sum(),
            (pl.col("accepted_at").list.sum().sum() / pl.col("verify_passes").sum()).alias("mean_accepted"),
            ((pl.col("draft_blocks").sum() + pl.col("verify_blocks").sum()) / pl.col("n_tokens").sum()).alias("blocks_per_token"),
            (pl.col("decode_s").sum() * 1000 / pl.col("n_tokens").sum()).alias("ms_per_token"),
            (pl.col("greedy_s").sum() * 1000 / pl.col("greedy_tokens").sum()).alias("greedy_ms_per_token"),
            (pl.col("draft_s").sum() / (pl.col("verify_passes") * pl.col("draft_len")).sum()).alias("_draft_step_s"),
            (pl.col("verify_s").sum() / pl.col("verify_passes").sum()).alias("_verify_s"),
            pl.col("matches_greedy").all().alias("lossless"),
        )
        .join(per_position, on=[*_CONFIG, "split"], how="left")
        .with_columns(
            pl.col("acceptance").list.first().alias("first_acceptance"),
            (pl.col("greedy_ms_per_token") / pl.col("ms_per_token")).alias("realised_speedup"),
            (pl.col("_draft_step_s") * 1000 / pl.col("greedy_ms_per_token")).alias("draft_step_cost"),
            (pl.col("_verify_s") * 1000 / pl.col("greedy_ms_per_token")).alias("verify_cost"),
        )
    )
    lens = similarity.select("model_id", "workload_id", pl.col("layer").cast(pl.Int32).alias("exit_layer"),
                             pl.col("top1_match").alias("lens_acceptance"))
    summary = summary.join(lens, on=["model_id", "workload_id", "exit_layer"], how="left")
    predicted = [
        None if p is None or d is None or v is None else speedup_from_costs(min(max(p, 0.0), 1.0), draft_len=k, draft_step=d,
                                                                           verify_cost=v)
        for p, k, d, v in summary.select("lens_acceptance", "draft_len", "draft_step_cost", "verify_cost").iter_rows()
    ]
    summary = summary.with_columns(pl.Series("predicted_speedup", predicted, dtype=pl.Float64)).with_columns(
        (pl.col("predicted_speedup") / pl.col("realised_speedup") - 1).alias("prediction_error"))
    return _mark_chosen(summary).select([pl.col(c).cast(t) for c, t in SUMMARY_SCHEMA.items()]).sort(
        ["model_id", "workload_id", "exit_layer", "draft_len", "split"])


def _mark_chosen(summary: pl.DataFrame) -> pl.DataFrame:
    """`chosen`: the (l, k) of the fastest realised decoding on the tune half of each
    model × workload's prompts (ties: the shallower draft, then the shorter), on both
    halves' rows; the test half's row is what it realises on prompts it was not chosen on."""
    best = (
        summary.filter(pl.col("split") == TUNE)
        .sort(["realised_speedup", "exit_layer", "draft_len"], descending=[True, False, False], nulls_last=True)
        .group_by(["model_id", "workload_id"], maintain_order=True)
        .first()
        .select("model_id", "workload_id", "exit_layer", "draft_len", pl.lit(True).alias("chosen"))
    )
    return summary.join(best, on=_CONFIG, how="left").with_columns(pl.col("chosen").fill_null(False))
