"""How much of the fused kernel's top-k counting its skip rule saves, on the real models.

The kernel counts, for each final top-k token, how many of a layer's logits beat it; only
"fewer than k" matters, so a program (a block of token-major (token, layer) rows) skips a
vocabulary tile when no logit in it beats any row's lowest still-undecided candidate.
How often that holds depends on real hidden states, so it is measured here on the
embedded models in float32, replaying the kernel's rule tile by tile with the GPU's tile
shapes (the counts are the kernel's; its tests check them against brute force).

    python -m benchmarks.rank_skip [--models ...] [--tiles 128x64 64x128]
"""

from __future__ import annotations

import argparse

import torch

from eexit_core.lens import engine as lens
from eexit_core.models.adapters import resolve_exit_head

PROMPTS = [
    "The capital of France is Paris, and the capital of Italy is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins",
    "In 1492, Columbus sailed across the Atlantic Ocean. The voyage was funded by",
]


def counted_tile_fraction(z: torch.Tensor, cand: torch.Tensor, top_k: int, block_m: int, block_n: int) -> float:
    """The share of (row block, vocabulary tile) pairs the kernel must count, for row
    logits `z` [R, V] (token-major) and each row's candidate logits `cand` [R, k]."""
    vocab = z.shape[1]
    counted = total = 0
    for start in range(0, z.shape[0], block_m):
        logits, candidates = z[start:start + block_m], cand[start:start + block_m]
        counts = torch.zeros_like(candidates, dtype=torch.long)
        for n0 in range(0, vocab, block_n):
            tile = logits[:, n0:n0 + block_n]
            lowest_open = torch.where(counts < top_k, candidates, torch.inf).amin(dim=1)
            total += 1
            if bool((tile.amax(dim=1) > lowest_open).any()):
                counted += 1
                counts += (tile[:, :, None] > candidates[:, None, :]).sum(dim=1)
    return counted / total


def model_rows(model_id: str, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exit-head logits of every non-final layer for the prompts' tokens, token-major
    [N·(L-1), V], and the logits of each token's final top-k tokens there [N·(L-1), k]."""
    from eexit_core.models.checkpoints import load_model
    from eexit_core.stages import build_model_checkpoint, registries
    from eexit_core.storage.workspace import Workspace

    workspace = Workspace.default()
    models, _ = registries(workspace)
    model, tokenizer = load_model(build_model_checkpoint(workspace, models.get(model_id)))
    head = resolve_exit_head(model)
    encoded = lens.encode_texts(tokenizer, PROMPTS, max_tokens=None, context_length=None)
    batch = lens.batches(encoded, batch_size=len(PROMPTS), pad_id=tokenizer.pad_token_id or 0,
                         bos_id=tokenizer.bos_token_id)[0]
    residuals, logits = lens.capture_residuals(model, head, batch)
    real = batch.attention_mask.bool().flatten()
    residuals, final = residuals.flatten(1, 2)[:, real], logits.flatten(0, 1)[real].float()
    inner = residuals.shape[0] - 1
    with torch.inference_mode():
        z = torch.stack([head.logits(residuals[layer]).float() for layer in range(inner)], dim=1).flatten(0, 1)
    top_ids = final.topk(top_k, dim=-1).indices.repeat_interleave(inner, dim=0)
    return z, torch.gather(z, 1, top_ids)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["smollm2-135m-instruct", "gemma-3-270m"])
    parser.add_argument("--tiles", nargs="*", default=["128x64", "64x128"], help="BLOCK_MxBLOCK_N")
    parser.add_argument("--top-k", type=int, default=10)
    args = parser.parse_args(argv)
    for model_id in args.models:
        z, cand = model_rows(model_id, args.top_k)
        for tiles in args.tiles:
            block_m, block_n = map(int, tiles.split("x"))
            share = counted_tile_fraction(z, cand, args.top_k, block_m, block_n)
            print(f"{model_id:<24} {z.shape[0]:>5} rows  V={z.shape[1]:<7} tiles {tiles:<7} "
                  f"counted {share:6.1%}  skipped {1 - share:6.1%}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
