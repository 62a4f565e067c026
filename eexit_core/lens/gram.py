"""The d-space lens: logit cosines without ever forming vocabulary-sized logits.

With a linear head `z = W n + b` (n = final_norm(h)), the mean-centred logits are
`z - mean(z) = Wc n + bc` where `Wc = W - 1 w̄ᵀ` centres every column over the
vocabulary. Appending a 1 to `n` folds the bias in, so every centred dot product is a
quadratic form in the d × d Gram matrix `Gc = Wcᵀ Wc`:

    logit_cos(l, L) = n_lᵀ Gc n_L / sqrt(n_lᵀ Gc n_l · n_Lᵀ Gc n_L)

and the raw cosine the same with `G = Wᵀ W`. Per token and layer that is O(d²) work
instead of O(d·V): the whole lens costs less than the forward pass. Soft-capped heads
(tanh) are not linear, so they stay in vocabulary space.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from eexit_core.models.adapters import ExitHead

DSPACE_STATS: tuple[str, ...] = ("logit_cos", "logit_cos_raw", "hidden_cos")


@dataclass(frozen=True)
class GramHead:
    """Gram matrices of a linear exit head, with the bias folded in as a last column."""

    centred: torch.Tensor  # [d+1, d+1]
    raw: torch.Tensor  # [d+1, d+1]


def supports_dspace(head: ExitHead) -> bool:
    return isinstance(head.lm_head, nn.Linear) and not head.logit_softcap


def gram_head(head: ExitHead, *, dtype: torch.dtype = torch.float32) -> GramHead:
    """Build both Gram matrices in float64 (V-sized sums), keep them in `dtype`."""
    if not supports_dspace(head):
        raise ValueError("the d-space lens needs a linear exit head without logit soft-capping")
    linear: nn.Linear = head.lm_head  # type: ignore[assignment]
    weight = linear.weight.detach().to(torch.float64)
    bias = (linear.bias.detach().to(torch.float64) if linear.bias is not None
            else torch.zeros(weight.shape[0], dtype=torch.float64, device=weight.device))
    augmented = torch.cat([weight, bias[:, None]], dim=1)  # [V, d+1]
    centred = augmented - augmented.mean(dim=0, keepdim=True)
    return GramHead(centred=(centred.T @ centred).to(dtype), raw=(augmented.T @ augmented).to(dtype))


def _augment(normed: torch.Tensor) -> torch.Tensor:
    return torch.cat([normed, torch.ones_like(normed[..., :1])], dim=-1)


def _cosines(gram: torch.Tensor, x: torch.Tensor, final: torch.Tensor) -> torch.Tensor:
    """cos under the metric `gram` between each row of x [L, N, k] and final [N, k]."""
    gx = x @ gram  # [L, N, k]
    gf = final @ gram  # [N, k]
    dot = (gx * final).sum(-1)
    sq_x = (gx * x).sum(-1).clamp_min(0)
    sq_f = (gf * final).sum(-1).clamp_min(0)
    return dot / torch.sqrt(sq_x * sq_f).clamp_min(1e-30)


def dspace_stats(head: ExitHead, gram: GramHead, residuals: torch.Tensor) -> dict[str, torch.Tensor]:
    """logit_cos, logit_cos_raw and hidden_cos [L, N] from residuals [L, N, d]."""
    with torch.inference_mode():
        dtype = gram.centred.dtype
        normed = _augment(head.normed(residuals).to(dtype))
        final = normed[-1]
        hidden = residuals.to(dtype)
        hidden_cos = (hidden * hidden[-1]).sum(-1) / (
            torch.linalg.vector_norm(hidden, dim=-1) * torch.linalg.vector_norm(hidden[-1], dim=-1)
        ).clamp_min(1e-30)
        return {
            "logit_cos": _cosines(gram.centred, normed, final),
            "logit_cos_raw": _cosines(gram.raw, normed, final),
            "hidden_cos": hidden_cos,
        }
