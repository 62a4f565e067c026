"""Lossless self-speculative decoding from the exit head (LayerSkip's self-speculation,
Draft & Verify): what early exit buys without changing the output.

Each round drafts `draft_len` tokens greedily with blocks 1..l and the exit head (the
model truncated after block l, `early_exit.truncated`), then verifies them in one
full-depth forward pass over the last accepted token and the drafts: the longest prefix
the full model would itself have produced is kept, plus the full model's own next token.
So the output is greedy full-depth decoding, token for token, by construction. What the
lens predicts of its speed, and the sweep that measures it, are in
`eexit_core.analysis.speculation` and `eexit_core.evaluation.speculation_sweep`.

One `DynamicCache` serves both. The draft appends keys and values for blocks 1..l only;
before the verify pass the cache is cropped back to the accepted context, and the verify
pass writes every block for the last accepted token and the drafts; after it the cache is
cropped to the accepted ones. Blocks 1..l of an accepted position therefore hold exactly
what a full-depth pass computes there (their input does not depend on later blocks).

Served: every model whose cache is a `DynamicCache` of attention layers with `crop`
(Llama, Gemma, Qwen, Mistral, Mixtral, ...). Not served: state-space layers (Mamba,
Mamba2, the hybrids' mixers), whose recurrent state cannot be cropped back to an earlier
position; `speculate` refuses them by name.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from eexit_core.decoding.early_exit import _cache_kw, truncated
from eexit_core.errors import EexitError
from eexit_core.models.adapters import ExitHead, resolve_exit_head


class SpeculationUnsupportedError(EexitError, ValueError):
    """The model keeps state that cannot be rolled back to an earlier position."""


@dataclass
class Speculation:
    """One greedy continuation by self-speculation and what it cost."""

    token_ids: list[int]
    exit_layer: int
    draft_len: int
    verify_passes: int = 0
    drafted_at: list[int] = field(default_factory=list)  # drafts proposed at position j of a round
    accepted_at: list[int] = field(default_factory=list)  # of those, accepted
    draft_blocks: int = 0  # block evaluations by the drafts (one token through one block each)
    verify_blocks: int = 0
    decode_s: float = 0.0  # the rounds, prefill excluded (as greedy decoding's `Generation.decode_s`)
    draft_s: float = 0.0  # of which drafting
    verify_s: float = 0.0  # of which verify passes

    @property
    def acceptance(self) -> list[float]:
        """Acceptance rate per draft position (given every earlier draft was accepted)."""
        return [a / d if d else float("nan") for a, d in zip(self.accepted_at, self.drafted_at, strict=True)]

    @property
    def mean_accepted(self) -> float:
        """Drafts accepted per verify pass."""
        return sum(self.accepted_at) / self.verify_passes if self.verify_passes else float("nan")

    @property
    def blocks_per_token(self) -> float:
        return (self.draft_blocks + self.verify_blocks) / len(self.token_ids) if self.token_ids else float("nan")


def _crop_to(cache, length: int) -> None:
    """Every layer of the cache back to `length` positions: the draft grew only blocks
    1..l, so each layer is cut by its own excess (the cache's own `crop` removes the same
    count from every layer)."""
    for layer in cache.layers:
        excess = layer.get_seq_length() - length if getattr(layer, "is_initialized", True) else 0
        if excess > 0:
            layer.crop(-excess)


def _refuse_stateful(model: nn.Module) -> None:
    kind = type(model).__name__
    if any(name in kind for name in ("Mamba", "Jamba", "Zamba", "FalconH1", "RecurrentGemma", "Rwkv")):
        raise SpeculationUnsupportedError(
            f"{kind} keeps a recurrent state that cannot be cropped back after a rejected draft; "
            "self-speculation serves attention-only models")


@torch.inference_mode()
def speculate(model: nn.Module, input_ids: torch.Tensor, *, exit_layer: int, draft_len: int, max_new_tokens: int,
              eos_ids: Sequence[int] = (), head: ExitHead | None = None) -> Speculation:
    """Greedy continuation of `input_ids` ([1, n], n >= 2) by self-speculation with drafts
    from layer `exit_layer`, `draft_len` per round; stops at an EOS id (not returned) or
    after `max_new_tokens`."""
    from transformers import DynamicCache

    _refuse_stateful(model)
    head = head or resolve_exit_head(model)
    if not 1 <= exit_layer < head.n_layers:
        raise ValueError(f"the draft's exit layer must be in 1..{head.n_layers - 1}, got {exit_layer}")
    if draft_len < 1:
        raise ValueError(f"draft_len must be at least 1, got {draft_len}")
    if input_ids.shape[0] != 1 or input_ids.shape[1] < 2:
        raise ValueError("self-speculation decodes one prompt of at least two tokens")
    result = Speculation([], exit_layer, draft_len, drafted_at=[0] * draft_len, accepted_at=[0] * draft_len)
    eos = set(eos_ids)
    cache = DynamicCache(config=model.config)
    cache.activate_past_recording()  # sliding-window layers keep what a rejected draft needs rolled back
    kw = _cache_kw(model, cache)
    model(input_ids=input_ids[:, :-1], **kw, use_cache=True, logits_to_keep=1)
    context = input_ids.shape[1] - 1  # positions in the cache
    last = input_ids[:, -1:]  # the newest token, not yet in the cache
    started = time.perf_counter()
    while len(result.token_ids) < max_new_tokens:
        drafts: list[int] = []
        token = last
        round_started = time.perf_counter()
        with truncated(model, exit_layer, head):
            for _ in range(draft_len):
                logits = model(input_ids=token, **kw, use_cache=True).logits[:, -1]
                drafts.append(int(logits.argmax(-1)))
                token = torch.tensor([[drafts[-1]]], device=input_ids.device)
        result.draft_blocks += draft_len * exit_layer
        verify_started = time.perf_counter()
        result.draft_s += verify_started - round_started
        _crop_to(cache, context)
        candidates = torch.cat([last, torch.tensor([drafts], device=input_ids.device)], dim=1)
        verified = model(input_ids=candidates, **kw, use_cache=True).logits[0].argmax(-1).tolist()
        result.verify_s += time.perf_counter() - verify_started
        result.verify_passes += 1
        result.verify_blocks += (draft_len + 1) * head.n_layers
        accepted = 0
        for position, draft in enumerate(drafts):
            result.drafted_at[position] += 1
            if draft != verified[position]:
                break
            result.accepted_at[position] += 1
            accepted += 1
        new = drafts[:accepted] + [verified[accepted]]  # the full model's own next token after the accepted drafts
        _crop_to(cache, context + 1 + accepted)  # the last token and the accepted drafts
        context += 1 + accepted
        stop = False
        for token_id in new:
            if token_id in eos or len(result.token_ids) >= max_new_tokens:
                stop = True
                break
            result.token_ids.append(token_id)
        if stop:
            break
        last = torch.tensor([[new[-1]]], device=input_ids.device)
    result.decode_s = time.perf_counter() - started
    return result
