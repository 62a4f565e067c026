"""Brute-force float64 references: per token, per layer, straight from SPEC §1.

Deliberately naive and independent of eexit_core: loops over tokens and layers, full
log-softmax, explicit centring, sorted top-k.
"""

from __future__ import annotations

import torch


def float64_exit_logits(model, norm, lm_head, hidden: torch.Tensor, softcap=None) -> torch.Tensor:
    """z = softcap(W · norm(h)) computed in float64 on a float64 copy of the modules."""
    h = hidden.double()
    normed = norm.double()(h) if norm is not None else h
    z = lm_head.double()(normed)
    if softcap:
        z = torch.tanh(z / softcap) * softcap
    return z


def reference_stats(z_l: torch.Tensor, z_final: torch.Tensor, h_l: torch.Tensor, h_final: torch.Tensor, k: int) -> dict[str, float]:
    """SPEC §1 stats for one token, float64."""
    z_l, z_final, h_l, h_final = (t.double() for t in (z_l, z_final, h_l, h_final))
    logp_l = torch.log_softmax(z_l, -1)
    logp_f = torch.log_softmax(z_final, -1)
    p_l, p_f = logp_l.exp(), logp_f.exp()
    top_l = set(torch.argsort(z_l, descending=True)[:k].tolist())
    top_f = set(torch.argsort(z_final, descending=True)[:k].tolist())
    ranked = torch.sort(p_l, descending=True).values
    zc_l, zc_f = z_l - z_l.mean(), z_final - z_final.mean()

    def cos(a, b):
        return float((a @ b) / (a.norm() * b.norm()))

    return {
        "top1_match": float(int(z_l.argmax()) == int(z_final.argmax())),
        "topk_overlap": len(top_l & top_f) / k,
        "kl_to_final": float((p_f * (logp_f - logp_l)).sum()),
        "logit_cos": cos(zc_l, zc_f),
        "logit_cos_raw": cos(z_l, z_final),
        "hidden_cos": cos(h_l, h_final),
        "entropy": float(-(p_l * logp_l).sum()),
        "max_prob": float(ranked[0]),
        "margin": float(ranked[0] - ranked[1]),
    }


def run_and_capture(model, blocks, input_ids: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One forward pass; each block's output (its first element if a tuple) and the logits
    of the first sequence. Hooks of our own, not eexit_core's capture."""
    captured: list[torch.Tensor] = []
    hooks = [b.register_forward_hook(lambda _m, _i, o: captured.append(o[0] if isinstance(o, tuple) else o)) for b in blocks]
    try:
        with torch.no_grad():
            logits = model(input_ids=input_ids).logits[0]
    finally:
        for hook in hooks:
            hook.remove()
    return captured, logits
