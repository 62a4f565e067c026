"""Where the lens spends its time: the top kernels of one engine pass, by device time.

    python -m benchmarks.profile_lens --case llama-3-8b-shape --tokens 4x1024 [--fused | --kernel]
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.run import CASES
from eexit_core.lens.engine import EncodedBatch, capture_residuals, stats_for_tokens
from eexit_core.models.adapters import resolve_exit_head


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--case", default="llama-3-8b-shape")
    parser.add_argument("--tokens", default="4x1024")
    parser.add_argument("--fused", action="store_true", help="the torch.compile engine")
    parser.add_argument("--kernel", action="store_true", help="the fused Triton kernel")
    parser.add_argument("--rows", type=int, default=15)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    case = next(c for c in CASES if c.name == args.case)
    model = case.build(device, dtype)
    head = resolve_exit_head(model)
    batch, seq = map(int, args.tokens.split("x"))
    ids = torch.randint(3, model.config.get_text_config().vocab_size, (batch, seq), device=device)
    encoded = EncodedBatch(ids, torch.ones_like(ids), torch.ones_like(ids, dtype=torch.bool), list(range(batch)))

    def engine():
        residuals, logits = capture_residuals(model, head, encoded)
        return stats_for_tokens(head, residuals.flatten(1, 2), logits.flatten(0, 1), fused="kernel" if args.kernel else args.fused)

    engine()  # warm-up and compile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        engine()
        if device == "cuda":
            torch.cuda.synchronize()
    key = "cuda_time_total" if device == "cuda" else "cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=args.rows, max_name_column_width=60))


if __name__ == "__main__":
    main()
