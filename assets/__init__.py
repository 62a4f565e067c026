"""Dagster assets, one module per asset, named after it; each calls one eexit_core stage
and carries the checks of its output."""

from assets import (
    eas_scores,
    exit_accuracy,
    factor_report,
    layer_activations,
    layer_similarity,
    model_checkpoints,
    oracle_exits,
    self_speculation_items,
    token_layer_stats,
    tuned_lens,
    workload_prompts,
    zoo,
)

ASSET_MODULES = [workload_prompts, model_checkpoints, layer_activations, token_layer_stats, layer_similarity, oracle_exits, exit_accuracy,
                 self_speculation_items, tuned_lens, eas_scores, factor_report, zoo]
