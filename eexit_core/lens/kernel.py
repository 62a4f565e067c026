"""The fused lens kernel (Triton): the exit head's matmul with every vocabulary-wide
reduction in its epilogue, so no layer's logits ever reach memory.

On a GPU the eager and the `torch.compile` lens write each layer's C × V logits to memory
and read them back; at a 128k vocabulary that round trip and the per-chunk launches, not
the matmul, bound them (47 % / 40 % of the roofline on an H200). Here each program owns a
block of (token, layer) rows, sweeps the vocabulary tile by tile, and keeps per row only
running reductions:

- an online log-sum-exp (running max and sum of exponentials) and the entropy numerator,
  rescaled whenever the running max moves;
- the top-1 id and the second-largest logit (for the margin);
- a streaming mean and sum of squared deviations, merged across tiles exactly (Chan et
  al.), for the centred norm without a second pass;
- the dot products with the final layer's probabilities (KL) and centred logits (logit
  cosine); rows are token-major, so a program reads each token's final row once a tile;
- for each of the final layer's top-k tokens, how many logits exceed its logit here
  (top-k overlap without a vocabulary-wide top-k). Only "fewer than k" matters, so a
  program skips the counting on tiles where no logit beats a still-undecided token
  (92-97 % of tiles on the embedded models).

The same arithmetic as `lens._layer_stats`, in a different order; `tests/lens/test_kernel.py`
checks it against the eager engine through Triton's CPU interpreter (float32). On a GPU
the tiles multiply in the model's half precision with float32 accumulation, as the eager
engine's `ExitHead.logits_into` does.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
from torch import nn

from eexit_core.models.adapters import ExitHead

try:  # an optional dependency: CUDA builds of torch ship it; CPU machines may not have it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where triton is absent
    triton = None
    tl = None

# per-row outputs of the kernel, in this order
_RUN_MAX, _RUN_SUM, _RUN_ENT, _SECOND, _MEAN, _M2, _P_DOT, _C_DOT = range(8)
_N_SCALARS = 8


def runs_on(device_type: str) -> bool:
    """Whether the kernel can run on this kind of device: CUDA, or Triton's interpreter."""
    return triton is not None and (device_type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1")


def kernel_available(head: ExitHead, device: torch.device) -> bool:
    """Whether the fused kernel can serve this head on this device."""
    if not isinstance(head.lm_head, nn.Linear) or head.lm_head.bias is not None:
        return False
    return runs_on(device.type)


if triton is not None:

    @triton.jit
    def _lens_rows_kernel(
        X, W, P_FINAL, C_FINAL, TOP_IDS, CAND, OUT, ARG, RANKS, COUNTED,
        n_rows, vocab, d_model, rows_per_token,
        stride_x, stride_w, stride_final,
        TOP_K: tl.constexpr, K_PAD: tl.constexpr, SOFTCAP: tl.constexpr, EXACT_FP32: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ):
        pid = tl.program_id(0)
        rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = rows < n_rows
        token = rows // rows_per_token
        lanes = tl.arange(0, BLOCK_N)
        k_lanes = tl.arange(0, K_PAD)
        neg_inf = float("-inf")

        run_max = tl.full([BLOCK_M], neg_inf, tl.float32)
        run_sum = tl.zeros([BLOCK_M], tl.float32)  # sum exp(z - run_max)
        run_ent = tl.zeros([BLOCK_M], tl.float32)  # sum exp(z - run_max) * (z - run_max)
        second = tl.full([BLOCK_M], neg_inf, tl.float32)
        arg = tl.zeros([BLOCK_M], tl.int32)
        mean = tl.zeros([BLOCK_M], tl.float32)
        m2 = tl.zeros([BLOCK_M], tl.float32)
        p_dot = tl.zeros([BLOCK_M], tl.float32)
        c_dot = tl.zeros([BLOCK_M], tl.float32)
        ranks = tl.zeros([BLOCK_M, K_PAD], tl.int32)
        cand_at = rows[:, None] * TOP_K + k_lanes[None, :]
        cand_ok = row_ok[:, None] & (k_lanes[None, :] < TOP_K)
        # the lowest of each row's candidates still undecided (fewer than TOP_K logits above it)
        lowest_open = tl.min(tl.load(CAND + cand_at, mask=cand_ok, other=float("inf")), axis=1)
        counted = 0

        for n0 in range(0, vocab, BLOCK_N):
            cols = n0 + lanes
            col_ok = cols < vocab
            acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
            for k0 in range(0, d_model, BLOCK_K):
                ks = k0 + tl.arange(0, BLOCK_K)
                k_ok = ks < d_model
                x = tl.load(X + rows[:, None] * stride_x + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
                w = tl.load(W + cols[:, None] * stride_w + ks[None, :], mask=col_ok[:, None] & k_ok[None, :], other=0.0)
                if EXACT_FP32:  # float32 weights: no silent TF32 rounding on the GPU
                    acc = tl.dot(x, tl.trans(w), acc, input_precision="ieee")
                else:
                    acc = tl.dot(x, tl.trans(w), acc)
            if SOFTCAP > 0:  # cap · tanh(acc / cap), with tanh(u) = 1 - 2 / (exp(2u) + 1)
                acc = SOFTCAP * (1.0 - 2.0 / (tl.exp(2.0 * acc / SOFTCAP) + 1.0))
            # padding columns multiply zero weights, so their acc is exactly 0 (so is
            # cap·tanh(0)): sums over acc need no mask. The dots and the mean come first, so
            # the final rows they load die before the top-k counts need registers.

            # dot products with the final layer: its probabilities and centred logits
            final_at = token[:, None] * stride_final + cols[None, :]
            final_ok = row_ok[:, None] & col_ok[None, :]
            p_dot += tl.sum(tl.load(P_FINAL + final_at, mask=final_ok, other=0.0) * acc, axis=1)
            c_dot += tl.sum(tl.load(C_FINAL + final_at, mask=final_ok, other=0.0) * acc, axis=1)

            # streaming mean and squared deviations (Chan's pairwise merge)
            n_old = n0 * 1.0
            n_tile = tl.minimum(vocab - n0, BLOCK_N) * 1.0
            tile_mean = tl.sum(acc, axis=1) / n_tile
            deviation = tl.where(col_ok[None, :], acc - tile_mean[:, None], 0.0)
            tile_m2 = tl.sum(deviation * deviation, axis=1)
            n_new = n_old + n_tile
            gap = tile_mean - mean
            mean = mean + gap * (n_tile / n_new)
            m2 = m2 + tile_m2 + gap * gap * (n_old * n_tile / n_new)

            # top-1 and the runner-up
            z = tl.where(col_ok[None, :], acc, neg_inf)
            tile_max, tile_arg = tl.max(z, axis=1, return_indices=True)
            tile_second = tl.max(tl.where(lanes[None, :] == tile_arg[:, None], neg_inf, z), axis=1)
            new_max = tl.maximum(run_max, tile_max)
            second = tl.maximum(tl.maximum(second, tile_second), tl.minimum(run_max, tile_max))
            arg = tl.where(tile_max > run_max, tile_arg + n0, arg)

            # how many logits beat each of the final layer's top-k tokens (itself excluded).
            # Only whether fewer than TOP_K do matters, so a tile with no logit above any
            # row's lowest undecided candidate is skipped: on real models 92-97 % of tiles.
            # A count is therefore exact while below TOP_K and only a lower bound after.
            if tl.max(tile_max - lowest_open, axis=0) > 0:
                for j in tl.static_range(TOP_K):
                    cand = tl.load(CAND + rows * TOP_K + j, mask=row_ok, other=float("inf"))
                    cand_id = tl.load(TOP_IDS + token * TOP_K + j, mask=row_ok, other=-1)
                    beats = (z > cand[:, None]) & (cols[None, :] != cand_id[:, None])
                    above = tl.sum(beats.to(tl.int32), axis=1)
                    ranks += tl.where(k_lanes[None, :] == j, above[:, None], 0)
                open_cand = tl.load(CAND + cand_at, mask=cand_ok & (ranks < TOP_K), other=float("inf"))
                lowest_open = tl.min(open_cand, axis=1)
                counted += 1

            # online log-sum-exp and entropy numerator, rescaled to the new running max
            # (padding columns and the first tile's -inf max are kept out of every product)
            shifted = tl.where(col_ok[None, :], acc - new_max[:, None], 0.0)
            expo = tl.where(col_ok[None, :], tl.exp(shifted), 0.0)
            scale = tl.exp(run_max - new_max)
            moved = tl.where(run_sum > 0, run_max - new_max, 0.0) * run_sum
            run_ent = scale * (run_ent + moved) + tl.sum(expo * shifted, axis=1)
            run_sum = scale * run_sum + tl.sum(expo, axis=1)
            run_max = new_max

        out = OUT + rows * 8
        tl.store(out + 0, run_max, mask=row_ok)
        tl.store(out + 1, run_sum, mask=row_ok)
        tl.store(out + 2, run_ent, mask=row_ok)
        tl.store(out + 3, second, mask=row_ok)
        tl.store(out + 4, mean, mask=row_ok)
        tl.store(out + 5, m2, mask=row_ok)
        tl.store(out + 6, p_dot, mask=row_ok)
        tl.store(out + 7, c_dot, mask=row_ok)
        tl.store(ARG + rows, arg, mask=row_ok)
        tl.store(RANKS + rows[:, None] * K_PAD + k_lanes[None, :], ranks, mask=row_ok[:, None])
        tl.store(COUNTED + pid, counted)


# tiles for the CPU interpreter (the tests): the smallest `tl.dot` takes; on a GPU `_tuned` picks
_INTERPRETER_TILES = {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 16}


_GPU_CONFIGS = [  # (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages): timed once per (vocab, d) shape
    (64, 128, 64, 4, 3), (64, 128, 64, 8, 3), (128, 128, 64, 8, 3), (128, 64, 64, 4, 4), (64, 256, 64, 8, 3),
    (128, 64, 64, 8, 3),
]
_TUNED: dict[str, object] = {}


def _tuned():
    if "kernel" not in _TUNED:
        configs = [triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, num_warps=w, num_stages=st)
                   for m, n, k, w, st in _GPU_CONFIGS]
        _TUNED["kernel"] = triton.autotune(configs, key=["vocab", "d_model"], reset_to_zero=["COUNTED"])(_lens_rows_kernel)
    return _TUNED["kernel"]


class KernelReductions(NamedTuple):
    """The kernel's output, per row (token-major, [N·R, ...])."""

    scalars: torch.Tensor  # [N·R, 8], in the order of _RUN_MAX .. _C_DOT
    top1: torch.Tensor  # [N·R] int32
    ranks: torch.Tensor  # [N·R, k]: logits above each final top-k token; exact below k, else ≥ k
    counted: torch.Tensor  # [programs]: how many vocabulary tiles each program had to count ranks on
    tiles: int  # vocabulary tiles per program

    @property
    def counted_frac(self) -> float:
        """The share of (program, tile) pairs that counted ranks (reads the device: a
        diagnostic, kept off the stats path)."""
        return int(self.counted.sum()) / (self.counted.numel() * self.tiles)


def kernel_layer_reductions(
    normed: torch.Tensor, weight: torch.Tensor, final_probs: torch.Tensor, final_centred: torch.Tensor,
    final_top_ids: torch.Tensor, softcap: float | None = None,
) -> KernelReductions:
    """Run the kernel on `normed` [N, R, d]: R rows (layers) for each of N tokens."""
    n_tokens, rows_per_token, d_model = normed.shape
    vocab = weight.shape[0]
    top_k = final_top_ids.shape[1]
    k_pad = triton.next_power_of_2(top_k)
    # the candidates' logits from the kernel's own inputs (float32 products of the same
    # half-precision values), so a rank compares like with like
    cand = torch.bmm(normed.float(), weight[final_top_ids].float().transpose(1, 2)).reshape(-1, top_k)
    if softcap:
        cand = torch.tanh(cand / softcap) * softcap
    cand = cand.contiguous()
    rows = normed.reshape(-1, d_model)
    n_rows = rows.shape[0]
    out = torch.empty((n_rows, _N_SCALARS), dtype=torch.float32, device=normed.device)
    arg = torch.empty((n_rows,), dtype=torch.int32, device=normed.device)
    ranks = torch.empty((n_rows, k_pad), dtype=torch.int32, device=normed.device)
    smallest_block = min([_INTERPRETER_TILES["BLOCK_M"]] + [config[0] for config in _GPU_CONFIGS])
    counted = torch.zeros((triton.cdiv(n_rows, smallest_block),), dtype=torch.int32, device=normed.device)
    flags = {"TOP_K": top_k, "K_PAD": k_pad, "SOFTCAP": float(softcap or 0.0), "EXACT_FP32": weight.dtype == torch.float32}
    args = (rows, weight, final_probs, final_centred, final_top_ids.to(torch.int32).contiguous(), cand, out, arg, ranks, counted,
            n_rows, vocab, d_model, rows_per_token, rows.stride(0), weight.stride(0), final_probs.stride(0))
    if normed.device.type == "cuda":
        tuned = _tuned()
        tuned[lambda meta: (triton.cdiv(n_rows, meta["BLOCK_M"]),)](*args, **flags)
        tiles = tuned.best_config.kwargs
    else:
        tiles = _INTERPRETER_TILES
        _lens_rows_kernel[(triton.cdiv(n_rows, tiles["BLOCK_M"]),)](*args, **flags, **tiles)
    programs = triton.cdiv(n_rows, tiles["BLOCK_M"])
    return KernelReductions(out, arg, ranks[:, :top_k], counted[:programs], triton.cdiv(vocab, tiles["BLOCK_N"]))
