"""The lens engine: per-token, per-layer statistics of the exit head applied to every block.

For each scored token `t` and layer `l = 1..L` it computes the stats of SPEC §1 between
`z_l = E(h_l)` and the final logits `z_L = E(h_L)` (the model's own output: checked). It
streams over token chunks so a chunk's `C × V` logits are the only vocabulary-sized
buffers alive, whatever L, T or V.

Which tokens are scored: every real (non-padding) position of every text, except a
leading BOS token, whose residual stream is an attention sink and whose prediction says
nothing about the text. Rows carry `position` (0-based, counting the BOS) so callers can
join them back to tokens.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    import polars as pl

    from eexit_core.lens.kernel import KernelReductions

from eexit_core import settings
from eexit_core.errors import EexitError
from eexit_core.lens.gram import DSPACE_STATS, dspace_stats, gram_head, supports_dspace
from eexit_core.models.adapters import ExitHead, resolve_exit_head, resolve_routers
from eexit_core.registry import OverContext
from eexit_core.storage.schema import STAT_COLUMNS  # re-exported: part of the public API

# A chunk's logits are capped near this many floats (128 MiB in float32). Narrower chunks
# leave the exit head's matmul bound by reading its weights: gemma-3-270m (262k vocabulary)
# on 512 tokens, 2 CPU cores, took 41.5 s in 64-row chunks, 36.9 s in 128 and 35.7 s in 256
# (1.2 GB more memory).
_CHUNK_FLOATS = 1 << 25


class PromptTooLongError(EexitError, ValueError):
    """A text has more tokens than the model's context window (`index` into the texts)."""

    def __init__(self, message: str, *, index: int | None = None, n_tokens: int | None = None,
                 context_length: int | None = None) -> None:
        super().__init__(message)
        self.index, self.n_tokens, self.context_length = index, n_tokens, context_length


class NonFiniteError(EexitError, FloatingPointError):
    """A layer produced NaN or inf; the numbers for this input cannot be trusted."""


class ExitHeadMismatchError(EexitError, RuntimeError):
    """The resolved exit head does not reproduce the model's own output logits."""


@dataclass(frozen=True)
class EncodedBatch:
    input_ids: torch.Tensor  # [B, T], right-padded
    attention_mask: torch.Tensor  # [B, T]
    scored: torch.Tensor  # [B, T] bool: positions whose prediction is scored
    sample: Sequence[int]  # index into the caller's texts for each row


# What becomes of a text longer than the model's context (a workload's `over_context`).
OVERFLOW_RULES = typing.get_args(OverContext)


def encode_texts(
    tokenizer, texts: Sequence[str], *, max_tokens: int | None, context_length: int | None,
    overflow: str = "fail",
) -> list[list[int]]:
    """Token ids of each text (with the tokenizer's special tokens), cut to `max_tokens`.
    A text still longer than the context fails (`PromptTooLongError`), loses its start
    (`truncate_left`: the last tokens are kept, after the BOS where the text has one) or
    is left out (`skip`: an empty list, which `batches` passes over), as `overflow` says."""
    if overflow not in OVERFLOW_RULES:
        raise ValueError(f"overflow must be one of {', '.join(OVERFLOW_RULES)}, got {overflow!r}")
    encoded: list[list[int]] = []
    for index, text in enumerate(texts):
        ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
        if max_tokens is not None:
            ids = ids[:max_tokens]
        if context_length is not None and len(ids) > context_length:
            if overflow == "fail":
                raise PromptTooLongError(
                    f"text {index} has {len(ids)} tokens but the model's context is "
                    f"{context_length}; shorten it, set the workload's max_tokens or its over_context",
                    index=index, n_tokens=len(ids), context_length=context_length,
                )
            ids = [] if overflow == "skip" else truncate_left(ids, context_length, tokenizer.bos_token_id)
        encoded.append(ids)
    return encoded


def truncate_left(ids: list[int], keep: int, bos_id: int | None) -> list[int]:
    """The last `keep` tokens, a leading BOS kept in front (it counts among them)."""
    if bos_id is not None and ids and ids[0] == bos_id:
        return [bos_id, *ids[len(ids) - keep + 1:]]
    return ids[len(ids) - keep:]


def overflowing(tokenizer, texts: Sequence[str], *, max_tokens: int | None, context_length: int | None) -> list[int]:
    """Indices of the texts longer than the context after the `max_tokens` cut."""
    if context_length is None:
        return []
    cut = max_tokens if max_tokens is not None else None
    return [i for i, text in enumerate(texts)
            if len(tokenizer(text, add_special_tokens=True)["input_ids"][:cut]) > context_length]


def model_context_length(model: nn.Module) -> int | None:
    """The positions the model was built for (`max_position_embeddings` of its text config)."""
    config = getattr(model, "config", None)
    return getattr(getattr(config, "get_text_config", lambda: config)(), "max_position_embeddings", None)


def batches(
    encoded: Sequence[list[int]], *, batch_size: int, pad_id: int, bos_id: int | None
) -> list[EncodedBatch]:
    """Right-padded batches of similar length (sorting by length keeps padding small)."""
    order = sorted((i for i in range(len(encoded)) if encoded[i]), key=lambda i: len(encoded[i]))  # [] was skipped
    out: list[EncodedBatch] = []
    for start in range(0, len(order), batch_size):
        members = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in members)
        ids = torch.full((len(members), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(members), width), dtype=torch.long)
        for row, i in enumerate(members):
            ids[row, : len(encoded[i])] = torch.tensor(encoded[i], dtype=torch.long)
            mask[row, : len(encoded[i])] = 1
        scored = mask.bool().clone()
        if bos_id is not None:
            scored[:, 0] &= ids[:, 0] != bos_id
        out.append(EncodedBatch(ids, mask, scored, members))
    return out


def _keeps_last_logits_only(model: nn.Module) -> dict:
    """`logits_to_keep=1` where the model's forward takes it: the lens computes the final
    logits of the scored tokens itself (`E(h_L)`), so the model's own head runs on one
    position per row, enough for `check_exit_head`."""
    import inspect

    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(type(model).forward).parameters else {}


def capture_residuals(
    model: nn.Module, head: ExitHead, batch: EncodedBatch, *, all_logits: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the model once; return the residual stream after every block [L, B, T, d]
    and the model's logits [B, T, V] (`all_logits=False`: at the last position of each
    row, [B, 1, V], where the model can be asked for fewer; the lens computes the scored
    tokens' final logits itself).

    Each block's output is copied into one preallocated buffer as it is produced, so
    the capture costs exactly L × B × T × d values on top of the forward pass.
    """
    captured: dict[str, torch.Tensor] = {}
    seen = [False] * head.n_layers

    def keep(index: int):
        def hook(_module, _inputs, output):
            hidden = output[0] if isinstance(output, (tuple, list)) else output
            if "buffer" not in captured:
                captured["buffer"] = hidden.new_empty((head.n_layers, *hidden.shape))
            captured["buffer"][index].copy_(hidden)
            seen[index] = True

        return hook

    handles = [block.register_forward_hook(keep(i)) for i, block in enumerate(head.blocks)]
    try:
        with torch.inference_mode():
            device = next(model.parameters()).device
            out = model(
                input_ids=batch.input_ids.to(device),
                attention_mask=batch.attention_mask.to(device),
                use_cache=False,
                **({} if all_logits else _keeps_last_logits_only(model)),
            )
    finally:
        for handle in handles:
            handle.remove()
    missing = [i + 1 for i, ran in enumerate(seen) if not ran]
    if missing:
        raise RuntimeError(f"blocks {missing} did not run; the adapter's block list is wrong")
    return captured["buffer"], out.logits


@dataclass(frozen=True)
class ScoredResiduals:
    """One batch's residual stream at its scored tokens, what every lens reads."""

    residuals: torch.Tensor  # [L, N, d]
    samples: list[int]  # index into the texts, per token
    positions: list[int]  # token index in its text, per token
    routers: torch.Tensor | None  # [L, N, 3] router stats of a mixture-of-experts model, else None


def scored_residuals(model: nn.Module, tokenizer, texts: Sequence[str], *, batch_size: int = settings.BATCH_SIZE,
                     max_tokens: int | None = None, overflow: str = "fail") -> typing.Iterator[ScoredResiduals]:
    """The model run once per batch of `texts`, each batch's scored tokens' residual
    stream yielded as it is captured (after checking that the exit head reproduces the
    model's own output)."""
    head = resolve_exit_head(model)
    encoded = encode_texts(tokenizer, texts, max_tokens=max_tokens, context_length=model_context_length(model),
                           overflow=overflow)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    routers = RouterCapture(resolve_routers(head))
    for batch in batches(encoded, batch_size=batch_size, pad_id=pad_id, bos_id=tokenizer.bos_token_id):
        with routers:
            residuals, logits = capture_residuals(model, head, batch, all_logits=False)
        rows, cols = torch.nonzero(batch.scored.to(residuals.device), as_tuple=True)
        if rows.numel() == 0:
            continue
        stacked = residuals[:, rows, cols]  # [L, N, d]
        _check_finite(stacked, logits[:, -1])  # a broken layer is named before the head is blamed
        # the batch's longest row (the last: rows are sorted by length) ends on a real token
        check_exit_head(head, residuals[-1, -1:, -1], logits[-1:, -1])
        del residuals
        router_values = routers.token_stats(tuple(batch.input_ids.shape), rows, cols) if routers.active else None
        yield ScoredResiduals(stacked, [batch.sample[int(r)] for r in rows.cpu()], cols.cpu().tolist(), router_values)


def final_logits_of(head: ExitHead, residuals: torch.Tensor) -> torch.Tensor:
    """`z_L = E(h_L)` of every token [N, V]: the final layer through the same head as the
    others (`check_exit_head` has checked it is the model's own output)."""
    with torch.inference_mode():
        return head.logits(residuals[-1])


def stats_from_residuals(head: ExitHead, residuals: torch.Tensor, wanted: Sequence[str], *, top_k: int = settings.TOP_K,
                         engine: str = settings.LENS_ENGINE, gram=None) -> torch.Tensor:
    """The `wanted` stats [L, N, S] of tokens' residual streams [L, N, d]: the d-space lens
    when `gram` is given (cosines only), else the vocabulary-space engine."""
    if gram is not None:
        _check_finite(residuals, residuals[-1])
        by_name = dspace_stats(head, gram, residuals)
        return torch.stack([by_name[name].float().cpu() for name in wanted], dim=-1)
    final_logits = final_logits_of(head, residuals)
    _check_finite(residuals, final_logits)
    values = stats_for_tokens(head, residuals, final_logits, top_k=top_k, fused=LENS_ENGINES[engine])
    return values[..., [STAT_COLUMNS.index(name) for name in wanted]]


def _final_layer(z_final: torch.Tensor, h_final: torch.Tensor, top_k: int) -> dict[str, torch.Tensor]:
    """What every layer of a chunk is compared with: computed once per chunk.

    The log-normaliser comes from `torch.logsumexp`, not `log_softmax`: on a 262k
    vocabulary with a flat tail, float32 `log_softmax` on CPU misses it by ~4e-5, so its
    probabilities sum to 1 + 4e-5, and every early-layer KL (hundreds of nats) inherits
    that error times its size. The probabilities are then renormalised by their own
    (accurate) sum, because the KL below assumes `sum p_L = 1` and each early layer
    multiplies a departure from it by its logit range.
    """
    log_probs = z_final - torch.logsumexp(z_final, dim=-1, keepdim=True)
    probs = torch.exp(log_probs)
    total = probs.sum(dim=-1, keepdim=True)
    probs.div_(total)
    log_probs.sub_(torch.log(total))
    mean = z_final.mean(dim=-1)
    centred = z_final - mean[:, None]
    return {
        "logits": z_final,
        "mean": mean,
        "probs": probs,
        "neg_entropy": (probs * log_probs).sum(dim=-1),
        "top_ids": torch.topk(z_final, top_k, dim=-1).indices,
        "centred": centred,
        "centred_norm": torch.linalg.vector_norm(centred, dim=-1),
        "hidden": h_final,
        "hidden_norm": torch.linalg.vector_norm(h_final, dim=-1),
    }


def _rowdot(a: torch.Tensor, b: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """Row-wise dot product through a reusable buffer (vecdot allocates a V-sized temporary)."""
    return torch.mul(a, b, out=scratch).sum(dim=-1)


def _assemble_stats(
    *, vocab: int, top_k: int, top1_match: torch.Tensor, overlap: torch.Tensor, mean: torch.Tensor,
    centred_sq: torch.Tensor, centred_dot: torch.Tensor, total: torch.Tensor, weighted: torch.Tensor,
    final_dot_shifted: torch.Tensor, second_gap: torch.Tensor, hidden: torch.Tensor,
    final_mean: torch.Tensor, final_centred_norm: torch.Tensor, final_neg_entropy: torch.Tensor,
    final_hidden: torch.Tensor, final_hidden_norm: torch.Tensor,
) -> torch.Tensor:
    """The stats [C, S] from one layer's row sums, shared by every engine.

    With `z` shifted so its max is 0: `total` = sum exp(z), `weighted` = sum exp(z)·z,
    `final_dot_shifted` = sum p_L·z, `second_gap` = (runner-up − max) logit; `mean`,
    `centred_sq` and `centred_dot` describe the unshifted logits.
    """
    lse = torch.log(total)  # logsumexp of the shifted logits
    max_prob = 1.0 / total
    # raw (uncentred) quantities follow exactly from the centred ones and the means
    raw_dot = centred_dot + vocab * mean * final_mean
    raw_norm = torch.sqrt(centred_sq + vocab * mean.square())
    final_raw_norm = torch.sqrt(final_centred_norm.square() + vocab * final_mean.square())
    hidden_cos = (hidden * final_hidden).sum(-1) / (torch.sqrt((hidden * hidden).sum(-1)) * final_hidden_norm).clamp_min(1e-30)
    columns = {
        "top1_match": top1_match.to(torch.float32),
        "topk_overlap": overlap.to(torch.float32) / top_k,
        # KL(p_L || p_l) = sum p_L log p_L - sum p_L (z - lse), as sum p_L = 1
        "kl_to_final": (final_neg_entropy - (final_dot_shifted - lse)).clamp_min(0.0),
        "logit_cos": centred_dot / (torch.sqrt(centred_sq) * final_centred_norm).clamp_min(1e-30),
        "logit_cos_raw": raw_dot / (raw_norm * final_raw_norm).clamp_min(1e-30),
        "hidden_cos": hidden_cos,
        "entropy": lse - weighted / total,
        "max_prob": max_prob,
        "margin": max_prob - torch.exp(second_gap) / total,
    }
    return torch.stack([columns[name] for name in STAT_COLUMNS], dim=-1)


def _layer_stats(
    z: torch.Tensor, scratch: torch.Tensor, final: dict[str, torch.Tensor], hidden: torch.Tensor, top_k: int
) -> torch.Tensor:
    """Stats [C, S] of one layer's logits `z` [C, V] against the final layer.

    Works in place: `z` is centred, then shifted by its max, and `scratch` holds the
    products; no vocabulary-sized tensor is allocated.
    """
    vocab = z.shape[-1]
    top_vals, top_ids = torch.topk(z, max(top_k, 2), dim=-1)
    top_ids = top_ids[:, :top_k]
    mean = z.sum(dim=-1) / vocab
    z.sub_(mean[:, None])  # z is now centred
    centred_sq = torch.linalg.vector_norm(z, dim=-1).square()
    centred_dot = _rowdot(z, final["centred"], scratch)
    z.sub_((top_vals[:, :1] - mean[:, None]))  # z is now shifted: max 0, so exp cannot overflow
    final_dot_shifted = _rowdot(z, final["probs"], scratch)
    total = torch.exp(z, out=scratch).sum(dim=-1)
    weighted = scratch.mul_(z).sum(dim=-1)
    return _assemble_stats(
        vocab=vocab, top_k=top_k, top1_match=top_ids[:, 0] == final["top_ids"][:, 0],
        overlap=(top_ids[:, :, None] == final["top_ids"][:, None, :]).any(-1).sum(-1),
        mean=mean, centred_sq=centred_sq, centred_dot=centred_dot, total=total, weighted=weighted,
        final_dot_shifted=final_dot_shifted, second_gap=top_vals[:, 1] - top_vals[:, 0], hidden=hidden,
        final_mean=final["mean"], final_centred_norm=final["centred_norm"], final_neg_entropy=final["neg_entropy"],
        final_hidden=final["hidden"], final_hidden_norm=final["hidden_norm"],
    )


def _layer_stats_fusable(
    z: torch.Tensor,
    final_centred: torch.Tensor,
    final_mean: torch.Tensor,
    final_centred_norm: torch.Tensor,
    final_probs: torch.Tensor,
    final_neg_entropy: torch.Tensor,
    final_top_ids: torch.Tensor,
    hidden: torch.Tensor,
    final_hidden: torch.Tensor,
    final_hidden_norm: torch.Tensor,
    top_k: int,
) -> torch.Tensor:
    """The same stats as `_layer_stats`, written without in-place ops or `out=` so that
    `torch.compile` can fuse the vocabulary-sized reductions into a few passes (GPU).

    No top-k: on a GPU a radix top-k over the vocabulary costs several reduction passes.
    The final layer's top-k tokens are ranked instead: token j is in this layer's top-k
    iff fewer than k logits exceed z[j], a count that fuses into one pass over z.
    """
    vocab = z.shape[-1]
    top1, top1_id = z.max(dim=-1)
    second = torch.where(
        torch.arange(vocab, device=z.device)[None, :] == top1_id[:, None], float("-inf"), z
    ).amax(dim=-1)
    candidates = torch.gather(z, 1, final_top_ids)  # [C, k]
    rank = (z[:, :, None] > candidates[:, None, :]).sum(dim=1)  # [C, k]
    mean = z.mean(dim=-1, keepdim=True)
    centred = z - mean
    shifted = z - top1[:, None]
    exp = torch.exp(shifted)
    return _assemble_stats(
        vocab=vocab, top_k=top_k, top1_match=top1_id == final_top_ids[:, 0], overlap=(rank < top_k).sum(-1),
        mean=mean[:, 0], centred_sq=(centred * centred).sum(-1), centred_dot=(centred * final_centred).sum(-1),
        total=exp.sum(-1), weighted=(exp * shifted).sum(-1), final_dot_shifted=(final_probs * shifted).sum(-1),
        second_gap=second - top1, hidden=hidden, final_mean=final_mean, final_centred_norm=final_centred_norm,
        final_neg_entropy=final_neg_entropy, final_hidden=final_hidden, final_hidden_norm=final_hidden_norm,
    )


_COMPILED: dict[str, object] = {}


def _fused_layer_stats():
    if "fn" not in _COMPILED:
        _COMPILED["fn"] = torch.compile(_layer_stats_fusable, dynamic=False)
    return _COMPILED["fn"]


def _final_row(final: dict[str, torch.Tensor], top_k: int) -> torch.Tensor:
    """The last layer against itself [C, S]: no vocabulary-sized work is left to do."""
    top2 = torch.topk(final["probs"], 2, dim=-1).values
    ones = torch.ones_like(top2[:, 0])
    columns = {
        "top1_match": ones, "topk_overlap": ones, "kl_to_final": torch.zeros_like(ones),
        "logit_cos": ones, "logit_cos_raw": ones, "hidden_cos": ones,
        "entropy": -final["neg_entropy"], "max_prob": top2[:, 0], "margin": top2[:, 0] - top2[:, 1],
    }
    return torch.stack([columns[name] for name in STAT_COLUMNS], dim=-1)


def _stats_from_reductions(
    reduced: KernelReductions, final: dict[str, torch.Tensor], hidden: torch.Tensor, vocab: int, top_k: int,
    rows_per_token: int,
) -> torch.Tensor:
    """Stats [R, S] from the fused kernel's per-row reductions (see `lens_kernel`), with
    each row's final-layer values repeated."""
    from eexit_core.lens import kernel as k

    def per_row(key: str) -> torch.Tensor:
        return final[key].repeat_interleave(rows_per_token, dim=0)

    # sum(c_L) is zero only up to rounding; the mean's share of c_dot is removed exactly
    # (summed once per token: repeating the V-wide rows first would cost C·R·V floats)
    centred_sum = final["centred"].sum(-1).repeat_interleave(rows_per_token, dim=0)

    scalars = reduced.scalars
    run_max, mean = scalars[:, k._RUN_MAX], scalars[:, k._MEAN]
    return _assemble_stats(
        vocab=vocab, top_k=top_k, top1_match=reduced.top1.long() == per_row("top_ids")[:, 0], overlap=(reduced.ranks < top_k).sum(-1),
        mean=mean, centred_sq=scalars[:, k._M2],
        centred_dot=scalars[:, k._C_DOT] - mean * centred_sum,
        total=scalars[:, k._RUN_SUM], weighted=scalars[:, k._RUN_ENT],
        final_dot_shifted=scalars[:, k._P_DOT] - run_max, second_gap=scalars[:, k._SECOND] - run_max, hidden=hidden,
        final_mean=per_row("mean"), final_centred_norm=per_row("centred_norm"), final_neg_entropy=per_row("neg_entropy"),
        final_hidden=per_row("hidden"), final_hidden_norm=per_row("hidden_norm"),
    )


def _kernel_stats(head: ExitHead, residuals: torch.Tensor, final_logits: torch.Tensor, top_k: int, chunk: int) -> torch.Tensor:
    """`stats_for_tokens` through the fused Triton kernel: layers 1..L-1 of a token chunk
    in one launch, token-major; the last layer from the final row alone."""
    from eexit_core.lens.kernel import kernel_layer_reductions

    n_layers, n_tokens, d_model = residuals.shape
    inner = n_layers - 1
    weight = head.lm_head.weight
    out = torch.empty((n_layers, n_tokens, len(STAT_COLUMNS)), dtype=torch.float32, device=final_logits.device)
    with torch.inference_mode():
        for start in range(0, n_tokens, chunk):
            stop = min(start + chunk, n_tokens)
            final = _final_layer(final_logits[start:stop].float(), residuals[-1, start:stop].float(), top_k)
            out[-1, start:stop] = _final_row(final, top_k)
            if inner == 0:
                continue
            hidden = residuals[:inner, start:stop].transpose(0, 1)  # [C, L-1, d], token-major
            normed = head.normed(hidden).to(weight.dtype).contiguous()
            reduced = kernel_layer_reductions(
                normed, weight, final["probs"], final["centred"], final["top_ids"], head.logit_softcap
            )
            rows = _stats_from_reductions(reduced, final, hidden.reshape(-1, d_model).float(), final_logits.shape[-1], top_k, inner)
            out[:inner, start:stop] = rows.view(stop - start, inner, -1).transpose(0, 1)
    return out.cpu()


def stats_for_tokens(
    head: ExitHead,
    residuals: torch.Tensor,
    final_logits: torch.Tensor,
    *,
    top_k: int = 10,
    chunk_floats: int | None = None,
    fused: bool | str = False,
) -> torch.Tensor:
    """All stats for N tokens: `residuals` [L, N, d], `final_logits` [N, V] -> [L, N, S].

    Streams over token chunks; two `C × V` float32 buffers are reused for every layer
    and chunk, so memory stays bounded whatever L, N or V. `fused=True` runs the
    vocabulary-sized reductions through `torch.compile` (worth it on a GPU);
    `fused="kernel"` runs the Triton kernel of `lens_kernel`, which never writes a
    layer's logits to memory at all (GPU, or Triton's interpreter in the tests).
    """
    n_layers, n_tokens, _ = residuals.shape
    vocab = final_logits.shape[-1]
    if top_k > vocab:
        raise ValueError(f"top_k={top_k} exceeds the vocabulary size {vocab}")
    device = final_logits.device
    budget = chunk_floats or (_CHUNK_FLOATS if device.type == "cpu" else _CHUNK_FLOATS * 2)
    chunk = max(1, min(n_tokens, budget // vocab))
    if fused == "kernel":
        from eexit_core.lens.kernel import kernel_available

        if not kernel_available(head, device):
            raise ValueError("the fused lens kernel needs Triton, a CUDA device (or TRITON_INTERPRET=1) "
                             "and a bias-free linear head; use fused=False")
        # its chunk only holds the final layer's rows (no per-layer logits): make it wider,
        # so one launch has enough (token, layer) rows to fill a GPU
        wide = max(1, min(n_tokens, (chunk_floats or _CHUNK_FLOATS * 4) // vocab))
        return _kernel_stats(head, residuals, final_logits, top_k, wide)
    if fused:  # a fixed power-of-two chunk keeps the compiled kernels' shapes static
        chunk = 1 << (chunk.bit_length() - 1)
    logits_buf = torch.empty((chunk, vocab), dtype=torch.float32, device=device)
    scratch_buf = logits_buf[:, :0] if fused else torch.empty_like(logits_buf)  # fused: unused
    out = torch.empty((n_layers, n_tokens, len(STAT_COLUMNS)), dtype=torch.float32, device=device)
    with torch.inference_mode():
        for start in range(0, n_tokens, chunk):
            stop = min(start + chunk, n_tokens)
            size = stop - start
            z, scratch = logits_buf[:size], scratch_buf[:size]
            final = _final_layer(final_logits[start:stop].float(), residuals[-1, start:stop].float(), top_k)
            for layer in range(n_layers):
                h = residuals[layer, start:stop]
                if layer == n_layers - 1:
                    z.copy_(final["logits"])
                else:
                    head.logits_into(h, z)
                if fused:
                    out[layer, start:stop] = _fused_layer_stats()(
                        z, final["centred"], final["mean"], final["centred_norm"], final["probs"],
                        final["neg_entropy"], final["top_ids"], h.float(), final["hidden"],
                        final["hidden_norm"], top_k,
                    )
                else:
                    out[layer, start:stop] = _layer_stats(z, scratch, final, h.float(), top_k)
    return out.cpu()


def check_exit_head(head: ExitHead, h_last: torch.Tensor, logits: torch.Tensor) -> None:
    """Fail loudly if `E(h_L)` is not the model's own output: the adapter would be wrong."""
    with torch.inference_mode():
        ours = head.logits(h_last).float()
    theirs = logits.float()
    scale = theirs.abs().max().clamp_min(1.0)
    err = (ours - theirs).abs().max() / scale
    # half-precision models round their own logits; allow for that, not for a wrong head
    tolerance = 1e-3 if logits.dtype == torch.float32 else 3e-2
    if not torch.isfinite(err) or err > tolerance:
        raise ExitHeadMismatchError(
            f"the exit head resolved for this model does not reproduce its output logits "
            f"(relative error {float(err):.2e}); register a correct adapter "
            f"(see eexit_core.models.adapters.register_adapter)"
        )


ROUTER_COLUMNS: tuple[str, ...] = ("router_top_expert", "router_entropy", "router_n_experts")


class RouterCapture:
    """Hooks on every MoE block's router: its logits for the tokens of one forward pass."""

    def __init__(self, routers: Sequence[nn.Module | None]):
        self.routers = list(routers)
        self.logits: dict[int, torch.Tensor] = {}
        self._handles: list = []

    @property
    def active(self) -> bool:
        return any(r is not None for r in self.routers)

    def __enter__(self) -> "RouterCapture":
        self.logits.clear()
        for index, router in enumerate(self.routers):
            if router is not None:
                self._handles.append(router.register_forward_hook(self._keep(index)))
        return self

    def _keep(self, index: int):
        def hook(_module, _inputs, output):
            self.logits[index] = output[0] if isinstance(output, (tuple, list)) else output

        return hook

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def token_stats(self, batch_shape: tuple[int, int], rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """[L, N, 3]: top expert, routing entropy (nats) and expert count; NaN for dense blocks."""
        out = torch.full((len(self.routers), rows.numel(), len(ROUTER_COLUMNS)), float("nan"))
        for index, logits in self.logits.items():
            per_token = logits.reshape(*batch_shape, logits.shape[-1])[rows, cols].float()
            log_probs = torch.log_softmax(per_token, dim=-1)
            out[index, :, 0] = per_token.argmax(dim=-1).float().cpu()
            out[index, :, 1] = -(log_probs.exp() * log_probs).sum(-1).cpu()
            out[index, :, 2] = float(per_token.shape[-1])
        return out


def _check_finite(residuals: torch.Tensor, final_logits: torch.Tensor) -> None:
    """Name the first layers whose residual stream holds NaN or inf (overflow, bad weights)."""
    finite = torch.isfinite(residuals).flatten(1).all(dim=1)
    if not bool(finite.all()) or not bool(torch.isfinite(final_logits).all()):
        bad = [int(l) + 1 for l in torch.nonzero(~finite).flatten()] or [len(finite)]
        raise NonFiniteError(f"non-finite values at layers {bad}; this input's numbers cannot be trusted")


def _requested(stats: Sequence[str] | None) -> tuple[str, ...]:
    if stats is None:
        return STAT_COLUMNS
    unknown = [name for name in stats if name not in STAT_COLUMNS]
    if unknown or not stats:
        raise ValueError(f"unknown stats {unknown}; choose from {STAT_COLUMNS}")
    return tuple(name for name in STAT_COLUMNS if name in stats)


# how `token_layer_stats` runs the vocabulary-wide work (d-space cosines ignore it)
LENS_ENGINES: dict[str, bool | str] = {"eager": False, "compiled": True, "kernel": "kernel"}


def token_layer_stats(
    model: nn.Module,
    tokenizer,
    texts: Sequence[str],
    *,
    top_k: int = settings.TOP_K,
    batch_size: int = settings.BATCH_SIZE,
    max_tokens: int | None = None,
    stats: Sequence[str] | None = None,
    engine: str = settings.LENS_ENGINE,
    overflow: str = "fail",
) -> "pl.DataFrame":
    """One row per (sample, position, layer) with the SPEC §1 stats; layer runs 1..L.

    `sample` indexes `texts`; `position` is the token index in that text (0-based,
    counting a BOS). Padding never reaches the stats: texts are right-padded and only
    real positions are scored, so batching does not change the numbers.

    Mixture-of-experts models also get `router_top_expert`, `router_entropy` (of the
    token's routing distribution, nats) and `router_n_experts` per token and layer (null
    for dense blocks).

    `stats` picks columns (default: all). When only `logit_cos`, `logit_cos_raw` and
    `hidden_cos` are asked for and the head is linear, the d-space lens computes them
    through the head's Gram matrix with no vocabulary-sized work at all.

    A text longer than the model's context fails, is cut from the left or is left out
    (no rows), as `overflow` says (`encode_texts`).

    `engine` picks how the other stats run: "eager" (in-place float32 passes, the
    default), "compiled" (`torch.compile`, GPU) or "kernel" (the fused Triton kernel of
    `lens_kernel`, GPU). All three compute the same numbers (tested to 1e-5).
    """
    if engine not in LENS_ENGINES:
        raise ValueError(f"unknown lens engine {engine!r}; choose from {sorted(LENS_ENGINES)}")
    head = resolve_exit_head(model)
    captured = scored_residuals(model, tokenizer, texts, batch_size=batch_size, max_tokens=max_tokens, overflow=overflow)
    return stats_frame(head, captured, stats=stats, top_k=top_k, engine=engine,
                       routed=RouterCapture(resolve_routers(head)).active)


def stats_frame(head: ExitHead, captured: typing.Iterable[ScoredResiduals], *, stats: Sequence[str] | None = None,
                top_k: int = settings.TOP_K, engine: str = settings.LENS_ENGINE, routed: bool = False) -> "pl.DataFrame":
    """The rows of `token_layer_stats` from captured residual streams, live from the model
    (`scored_residuals`) or read back from an activation dump (`lens.activations`): the
    same function on the same values, so a float32 dump gives the live numbers exactly."""
    wanted = _requested(stats)
    gram = gram_head(head) if set(wanted) <= set(DSPACE_STATS) and supports_dspace(head) else None
    columns = (*wanted, *ROUTER_COLUMNS) if routed else wanted
    frames: list[pl.DataFrame] = []
    for part in captured:
        values = stats_from_residuals(head, part.residuals, wanted, top_k=top_k, engine=engine, gram=gram)
        if not torch.isfinite(values).all():
            bad = sorted({int(l) + 1 for l in torch.nonzero(~torch.isfinite(values))[:, 0]})
            raise NonFiniteError(f"non-finite values at layers {bad}")
        if routed:
            values = torch.cat([values, part.routers.to(values.device)], dim=-1)
        frames.append(_to_frame(values, columns, part.samples, part.positions))
    if not frames:
        return _empty_frame(columns)
    import polars as pl

    return pl.concat(frames).sort(["sample", "position", "layer"])


def _to_frame(values: torch.Tensor, names: Sequence[str], samples: list[int], positions: list[int]) -> "pl.DataFrame":
    import polars as pl

    n_layers, n_tokens, _ = values.shape
    flat = values.permute(1, 0, 2).reshape(n_tokens * n_layers, -1).numpy()
    frame = pl.DataFrame(
        {
            "sample": pl.Series([s for s in samples for _ in range(n_layers)], dtype=pl.Int32),
            "position": pl.Series([p for p in positions for _ in range(n_layers)], dtype=pl.Int32),
            "layer": pl.Series(list(range(1, n_layers + 1)) * n_tokens, dtype=pl.Int16),
        }
    )
    frame = pl.concat([frame, pl.DataFrame(flat, schema=list(names), orient="row")], how="horizontal")
    if "top1_match" in names:
        frame = frame.with_columns(pl.col("top1_match").cast(pl.Boolean))
    if "router_top_expert" in names:  # dense blocks of a MoE model have no router: null
        frame = frame.with_columns(
            pl.col(c).fill_nan(None) for c in ROUTER_COLUMNS
        ).with_columns(pl.col("router_top_expert").cast(pl.Int16), pl.col("router_n_experts").cast(pl.Int16))
    return frame


def _empty_frame(names: Sequence[str] = STAT_COLUMNS) -> "pl.DataFrame":
    import polars as pl

    schema: dict[str, pl.DataType] = {"sample": pl.Int32, "position": pl.Int32, "layer": pl.Int16}
    types = {"top1_match": pl.Boolean, "router_top_expert": pl.Int16, "router_n_experts": pl.Int16}
    schema.update({name: types.get(name, pl.Float32) for name in names})
    return pl.DataFrame(schema=schema)


__all__ = [
    "STAT_COLUMNS",
    "token_layer_stats",
    "stats_for_tokens",
    "capture_residuals",
    "PromptTooLongError",
    "OVERFLOW_RULES",
    "encode_texts",
    "model_context_length",
    "overflowing",
    "truncate_left",
    "NonFiniteError",
    "ExitHeadMismatchError",
]
