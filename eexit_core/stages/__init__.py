"""The pipeline's stages as plain functions, one module per asset.

Each reads its inputs from the workspace, computes, and writes its artifact atomically.
Dagster assets (and notebooks) call these; every name below is importable from
`eexit_core.stages`."""

from eexit_core.stages.checkpoint import build_model_checkpoint, read_checkpoint
from eexit_core.stages.common import (
    EXIT_ACCURACY,
    EXIT_ITEMS,
    LAYER_ACTIVATIONS,
    LAYER_SIMILARITY,
    ORACLE_EXITS,
    SELF_SPECULATION_ITEMS,
    TOKEN_STATS,
    TUNED_LENS,
    MissingUpstreamError,
    registries,
)
from eexit_core.stages.exit_accuracy import (
    build_exit_accuracy,
    exit_accuracy_data_version,
    exit_accuracy_fresh,
    exit_asset_code_version,
    exit_code_modules,
    exit_code_version,
    plan_exit_accuracy,
)
from eexit_core.stages.layer_similarity import build_layer_similarity
from eexit_core.stages.oracle_exits import build_oracle_exits
from eexit_core.stages.prompts import build_workload_prompts, prompts_data_version
from eexit_core.stages.results import ScoreSettings, build_eas_scores, compute_eas, eas_table, exit_tables
from eexit_core.stages.token_stats import (
    LensSettings,
    build_token_layer_stats,
    lens_code_version,
    lens_modules,
    lens_version,
    token_stats_data_version,
    token_stats_fresh,
)

__all__ = [
    "EXIT_ACCURACY", "EXIT_ITEMS", "LAYER_ACTIVATIONS", "LAYER_SIMILARITY", "LensSettings", "MissingUpstreamError", "ORACLE_EXITS",
    "SELF_SPECULATION_ITEMS", "ScoreSettings", "TOKEN_STATS",
    "TUNED_LENS", "build_eas_scores", "build_exit_accuracy", "build_layer_similarity",
    "build_model_checkpoint", "build_oracle_exits", "build_token_layer_stats", "build_workload_prompts",
    "compute_eas", "eas_table", "exit_accuracy_data_version", "exit_accuracy_fresh",
    "exit_asset_code_version", "exit_code_modules", "exit_code_version", "exit_tables", "lens_code_version",
    "lens_modules", "lens_version", "plan_exit_accuracy", "prompts_data_version", "read_checkpoint", "registries",
    "token_stats_data_version", "token_stats_fresh",
]
