"""The benchmark's arbiters: the naive lens's loop run in float64.

`float64_lens` is what every side of `make bench` is scored against; `float64_head_lens`
shows how much of the remaining error is float32 logits themselves.
"""

from __future__ import annotations

import torch

from benchmarks.naive import stats_from_hidden


@torch.inference_mode()
def float64_lens(head, residuals: torch.Tensor, final_logits: torch.Tensor, *, chunk: int | None = None) -> torch.Tensor:
    """The benchmark's arbiter [L, N, S]: every vocabulary-wide step in float64, on the
    exit head's own logits (the float32 `E(h_l)` the engine sees, with the model's final
    logits as `z_L`). It isolates the lens arithmetic, which is what the engine changes;
    the float32 matmul is the model's, shared by every float32 pipeline (see
    `float64_head_lens` for what it costs). Chunked over tokens: memory stays bounded."""
    n_tokens, vocab = final_logits.shape
    chunk = chunk or (32 if final_logits.device.type == "cpu" else 256)
    buffer = torch.empty((min(chunk, n_tokens), vocab), dtype=torch.float32, device=final_logits.device)
    parts = []
    for start in range(0, n_tokens, chunk):
        stop = min(start + chunk, n_tokens)
        z_final = final_logits[start:stop].double()

        def exit_logits(layer: int, _h: torch.Tensor) -> torch.Tensor:
            if layer == len(residuals) - 1:
                return z_final
            return head.logits_into(residuals[layer, start:stop], buffer[: stop - start]).double()

        hidden = [h.double() for h in residuals[:, start:stop]]
        parts.append(stats_from_hidden(hidden, z_final, exit_logits))
    return torch.cat(parts, dim=1)


@torch.inference_mode()
def float64_head_lens(head, residuals: torch.Tensor) -> torch.Tensor:
    """The same stats with the exit head itself (norm, unembedding) in float64 as well:
    how far float32 logits alone put any float32 pipeline from exact."""
    import copy

    norm = copy.deepcopy(head.final_norm).double() if head.final_norm is not None else (lambda x: x)
    lm_head = copy.deepcopy(head.lm_head).double()
    softcap = head.logit_softcap

    def exit_logits(_layer: int, h: torch.Tensor) -> torch.Tensor:
        z = lm_head(norm(h))
        return torch.tanh(z / softcap) * softcap if softcap else z

    hidden = [h.double() for h in residuals]
    return stats_from_hidden(hidden, exit_logits(-1, hidden[-1]), exit_logits)
