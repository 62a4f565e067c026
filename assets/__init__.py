"""Dagster assets, one module per stage; each calls one eexit_core function."""

from assets import activations, exits, models, oracle, report, scores, similarity, workloads

ASSET_MODULES = [workloads, models, activations, similarity, oracle, exits, scores, report]
