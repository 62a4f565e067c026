"""Lossless self-speculation measured on a workload: each prompt decoded greedily once,
then by self-speculation at each exit layer l and draft length k of the sweep, in the same
process, so the realised speedup compares like with like.

`measure_speculation` returns the `self_speculation_items` rows of one model × workload
(`eexit_core.analysis.speculation` summarises them): per prompt × (l, k), the drafts
proposed and accepted at each position of a round, the verify passes, the blocks run, the
wall time of the drafts, of the verify passes and of greedy decoding, and whether the
tokens equal greedy decoding's (they must: the asset's check fails on a False).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import polars as pl
from torch import nn

from eexit_core.analysis.speculation import ITEM_SCHEMA, TEST, TUNE
from eexit_core.decoding import early_exit
from eexit_core.decoding.self_speculation import speculate
from eexit_core.models.adapters import resolve_exit_head

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpeculationSettings:
    """How much of the self-speculation sweep runs. Every field changes what is measured,
    so all of them key the stored items' freshness. The defaults are CPU-sized: on this
    2-core machine one prompt costs SmolLM2-135M about 15 s and gemma-3-270m about 30 s
    (a self-speculative token costs them 2.5-5 greedy ones here); `full()` is GPU-sized."""

    exit_points: int | None = 3  # draft exit layers spread below L: L/4, L/2, 3L/4 (None: every layer 1..L-1)
    draft_lens: tuple[int, ...] = (2, 4)
    n_prompts: int | None = 2  # prompts decoded, alternately tune and test (None: every drawn item)
    max_new_tokens: int = 12

    @classmethod
    def full(cls) -> "SpeculationSettings":
        """Seven exit layers, four draft lengths, every item, 128 tokens: a GPU-sized sweep."""
        return cls(exit_points=7, draft_lens=(1, 2, 4, 8), n_prompts=None, max_new_tokens=128)

    @classmethod
    def from_json(cls, text: str) -> "SpeculationSettings":
        """The settings a stored partition was measured with (its `settings` metadata)."""
        fields = json.loads(text)
        return cls(**{**fields, "draft_lens": tuple(fields.get("draft_lens", cls.draft_lens))})

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def exit_layers(self, n_layers: int) -> list[int]:
        """The draft exit layers: `exit_points` of them spread evenly below the last layer."""
        if n_layers < 2:
            raise ValueError("self-speculation needs at least two layers")
        if self.exit_points is None or self.exit_points >= n_layers - 1:
            return list(range(1, n_layers))
        if self.exit_points < 1:
            raise ValueError(f"exit_points must be >= 1, got {self.exit_points}")
        return sorted({min(n_layers - 1, max(1, round(n_layers * j / (self.exit_points + 1))))
                       for j in range(1, self.exit_points + 1)})


def split_of(index: int) -> str:
    """Prompts alternate, in their drawn order (the workload's seed), between the half the
    best (l, k) is chosen on and the half it is reported on."""
    return TUNE if index % 2 == 0 else TEST


Progress = Callable[[str], None]
_ITEM_COLUMNS = {k: v for k, v in ITEM_SCHEMA.items() if k not in ("model_id", "workload_id")}


def measure_speculation(model: nn.Module, tokenizer, prompts: Sequence[tuple[str, str]], settings: SpeculationSettings,
                        progress: Progress = log.info) -> pl.DataFrame:
    """Greedy decoding and self-speculation at every (l, k) of `settings` on each
    (prompt_id, text), batch of one: the items table without its model and workload columns."""
    if not prompts:
        raise ValueError("no prompts to decode")
    head = resolve_exit_head(model)
    device = next(model.parameters()).device
    eos = sorted(early_exit._eos_ids(tokenizer, model))
    layers = settings.exit_layers(head.n_layers)
    rows = []
    for index, (prompt_id, text) in enumerate(prompts):
        started = time.perf_counter()
        ids = early_exit._encode(tokenizer, text, device)
        greedy = early_exit.generate_dynamic(model, tokenizer, text, None, max_new_tokens=settings.max_new_tokens,
                                             head=head)
        for layer in layers:
            for draft_len in settings.draft_lens:
                spec = speculate(model, ids, exit_layer=layer, draft_len=draft_len,
                                 max_new_tokens=settings.max_new_tokens, eos_ids=eos, head=head)
                rows.append({
                    "prompt_id": prompt_id, "split": split_of(index), "exit_layer": layer, "draft_len": draft_len,
                    "n_layers": head.n_layers, "n_tokens": len(spec.token_ids), "verify_passes": spec.verify_passes,
                    "drafted_at": spec.drafted_at, "accepted_at": spec.accepted_at, "draft_blocks": spec.draft_blocks,
                    "verify_blocks": spec.verify_blocks, "draft_s": spec.draft_s, "verify_s": spec.verify_s,
                    "decode_s": spec.decode_s, "greedy_tokens": len(greedy.token_ids), "greedy_s": greedy.decode_s,
                    "matches_greedy": spec.token_ids == greedy.token_ids,
                })
        progress(f"{prompt_id} ({split_of(index)}): greedy and {len(layers) * len(settings.draft_lens)} "
                 f"self-speculative decodings of up to {settings.max_new_tokens} tokens ({time.perf_counter() - started:.1f}s)")
    return pl.DataFrame(rows, schema=_ITEM_COLUMNS)
