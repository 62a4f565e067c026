"""The naive lens: what a researcher writes by hand, kept as the benchmark's baseline.

`output_hidden_states=True`, then for every layer a full-vocabulary fp32 logit lens with
log-softmax over all tokens at once, KL to the final layer, top-1 / top-k agreement,
cosines and confidence. Same definitions as eexit_core.lens.engine (SPEC §1), none of its care.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a, b, dim=-1, eps=1e-30)


@torch.inference_mode()
def naive_stats(model, input_ids: torch.Tensor, norm, lm_head, last_block, *, top_k: int = 10, softcap=None) -> torch.Tensor:
    """Stats [L, N, S] for every token of `input_ids` (no padding, no BOS handling)."""
    captured = {}
    hook = last_block.register_forward_hook(lambda _m, _i, o: captured.setdefault("h", o[0] if isinstance(o, tuple) else o))
    try:
        out = model(input_ids=input_ids, output_hidden_states=True, use_cache=False)
    finally:
        hook.remove()
    hidden = [h.flatten(0, 1) for h in out.hidden_states[1:-1]] + [captured["h"].flatten(0, 1)]

    def exit_logits(_layer: int, h: torch.Tensor) -> torch.Tensor:
        z = lm_head(norm(h).to(lm_head.weight.dtype)).float()
        return torch.tanh(z / softcap) * softcap if softcap else z

    return stats_from_hidden(hidden, out.logits.flatten(0, 1).float(), exit_logits, top_k=top_k)


@torch.inference_mode()
def stats_from_hidden(hidden: list[torch.Tensor], z_final: torch.Tensor,
                      exit_logits: Callable[[int, torch.Tensor], torch.Tensor], *, top_k: int = 10) -> torch.Tensor:
    """The per-layer loop of the naive lens, in the precision of `z_final` (float32 for the
    baseline, float64 for the benchmark's references); `exit_logits(l, h_l)` is `E(h_l)`."""
    dtype = z_final.dtype
    logp_final = torch.log_softmax(z_final, dim=-1)
    p_final = logp_final.exp()
    top_final = torch.topk(z_final, top_k, dim=-1).indices
    centred_final = z_final - z_final.mean(-1, keepdim=True)
    rows = []
    for layer, h in enumerate(hidden):
        z = exit_logits(layer, h).to(dtype)
        logp = torch.log_softmax(z, dim=-1)
        p = logp.exp()
        top = torch.topk(p, 2, dim=-1)
        # rank by logits: far-down probabilities underflow to equal values and tie
        top_ids = torch.topk(z, top_k, dim=-1).indices
        overlap = (top_ids[:, :, None] == top_final[:, None, :]).any(-1).to(dtype).sum(-1) / top_k
        rows.append(torch.stack([
            (z.argmax(-1) == z_final.argmax(-1)).to(dtype),
            overlap,
            (p_final * (logp_final - logp)).sum(-1),
            _cos(z - z.mean(-1, keepdim=True), centred_final),
            _cos(z, z_final),
            _cos(h.to(dtype), hidden[-1].to(dtype)),
            -(p * logp).sum(-1),
            top.values[:, 0],
            top.values[:, 0] - top.values[:, 1],
        ], dim=-1))
    return torch.stack(rows)
