"""Column names shared by the stored tables, in a module any part of eexit can import
without torch (the lens computes these statistics; the analysis reads them)."""

from __future__ import annotations

# per token and layer, in this order (SPEC §1; README "What is measured")
STAT_COLUMNS: tuple[str, ...] = (
    "top1_match",
    "topk_overlap",
    "kl_to_final",
    "logit_cos",
    "logit_cos_raw",
    "hidden_cos",
    "entropy",
    "max_prob",
    "margin",
)
