"""The lens benchmark: the naive pipeline and the eexit engine side by side, in one run.

    python -m benchmarks.run                 # what `make bench` calls
    python -m benchmarks.run --cases smollm2-135m-instruct --tokens 2x64

On CPU every case runs twice, in a child process per allocator setting: glibc's default
malloc (which re-maps and pages in every large temporary) and MALLOC_MMAP_MAX_=0
(buffers reused); both sides of a comparison always run under the same setting. On a
GPU it runs the full-size anchor shapes in bf16. For every case it prints tokens/s of the
forward pass alone, the naive pipeline, the engine (all stats) and the d-space lens
(cosines only), their ratios, the largest difference of each from a float64 reference, peak
memory and, on a GPU, the fraction of the FLOP roofline. Results go to
`benchmarks/results/latest.json` (atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from benchmarks.naive import naive_stats
from benchmarks.reference import float64_head_lens, float64_lens
from eexit_core.lens import kernel as lens_kernel
from eexit_core.lens.engine import STAT_COLUMNS, EncodedBatch, capture_residuals, stats_for_tokens
from eexit_core.lens.gram import DSPACE_STATS, dspace_stats, gram_head, supports_dspace
from eexit_core.models.adapters import resolve_exit_head

RESULTS = Path(__file__).resolve().parent / "results"
H200_BF16_FLOPS = 790e12  # dense bf16 matrix products measured on the lent H200


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[str, torch.dtype], torch.nn.Module]
    devices: tuple[str, ...]


def _random_model(config, device: str, dtype: torch.dtype) -> torch.nn.Module:
    """A model with random weights, built straight on the device (speed ignores values)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model = model.to_empty(device=device)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() > 1:
                param.normal_(0.0, 0.02)
            elif name.endswith("weight"):  # norm scales
                param.fill_(1.0)
            else:  # biases, SSM decay and skip parameters
                param.zero_()
    _reset_rotary(model, device)
    return model.eval()


def _reset_rotary(model: torch.nn.Module, device: str) -> None:
    """Buffers built on the meta device hold garbage after to_empty: rebuild rotary tables."""
    for module in model.modules():
        own = dict(module.named_buffers(recurse=False))
        if "inv_freq" in own and hasattr(module, "config"):
            fresh = type(module)(module.config)
            for name, buffer in fresh.named_buffers(recurse=False):
                setattr(module, name, buffer.to(device))
            if hasattr(fresh, "attention_scaling"):
                module.attention_scaling = fresh.attention_scaling


def _llama(vocab: int, d: int, layers: int, ffn: int, heads: int, kv: int):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab, hidden_size=d, intermediate_size=ffn, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=4096,
                       tie_word_embeddings=False)


def _embedded(model_id: str):
    def build(device: str, dtype: torch.dtype) -> torch.nn.Module:
        from eexit_core.models.checkpoints import load_model
        from eexit_core.stages import build_model_checkpoint, registries
        from eexit_core.storage.workspace import Workspace

        ws = Workspace.default()
        models, _ = registries(ws)
        model, _ = load_model(build_model_checkpoint(ws, models.get(model_id)), device=device, dtype=dtype)
        return model

    return build


def _qwen3_moe():
    from transformers import Qwen3MoeConfig

    return Qwen3MoeConfig(vocab_size=151936, hidden_size=2048, intermediate_size=6144, moe_intermediate_size=768,
                          num_hidden_layers=48, num_attention_heads=32, num_key_value_heads=4, head_dim=128,
                          num_experts=128, num_experts_per_tok=8, max_position_embeddings=4096, tie_word_embeddings=False)


def _mamba2():
    from transformers import Mamba2Config

    return Mamba2Config(vocab_size=32768, hidden_size=4096, num_hidden_layers=64, state_size=128, expand=2,
                        n_groups=8, head_dim=64, num_heads=128, tie_word_embeddings=False)


CASES = [
    Case("llama2-shape-small", lambda dev, dt: _random_model(_llama(32000, 512, 8, 1376, 8, 8), dev, dt), ("cpu",)),
    Case("llama3-shape-small", lambda dev, dt: _random_model(_llama(128256, 512, 8, 1792, 8, 2), dev, dt), ("cpu",)),
    Case("smollm2-135m-instruct", _embedded("smollm2-135m-instruct"), ("cpu",)),
    Case("gemma-3-270m", _embedded("gemma-3-270m"), ("cpu",)),
    Case("llama-2-7b-shape", lambda dev, dt: _random_model(_llama(32000, 4096, 32, 11008, 32, 32), dev, dt), ("cuda",)),
    Case("llama-3-8b-shape", lambda dev, dt: _random_model(_llama(128256, 4096, 32, 14336, 32, 8), dev, dt), ("cuda",)),
    Case("qwen3-30b-a3b-shape", lambda dev, dt: _random_model(_qwen3_moe(), dev, dt), ("cuda",)),
    Case("mamba2-7b-shape", lambda dev, dt: _random_model(_mamba2(), dev, dt), ("cuda",)),
]


class PeakMemory:
    """Peak memory above the starting point: CUDA allocator stats, or sampled RSS on CPU."""

    def __init__(self, device: str):
        self.device = device

    def __enter__(self) -> "PeakMemory":
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            import psutil

            self._proc = psutil.Process()
            self.start = self._proc.memory_info().rss
            self._peak = self.start
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._peak = max(self._peak, self._proc.memory_info().rss)

    def __exit__(self, *exc) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
            self.total_peak = self.peak
        else:
            self._stop.set()
            self._thread.join()
            self.peak = self._peak - self.start
            self.total_peak = self._peak


def _timed(device: str, fn: Callable[[], object], repeats: int) -> tuple[float, object, PeakMemory]:
    fn()  # warm-up (allocator, kernels, caches)
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        for _ in range(repeats):
            result = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / repeats
    return seconds, result, memory


def _forward_flops_per_token(model: torch.nn.Module, seq: int) -> float:
    config = model.config.get_text_config()
    params = sum(p.numel() for p in model.parameters())
    params -= model.get_input_embeddings().weight.numel()
    experts = getattr(config, "num_experts", None) or getattr(config, "num_local_experts", None)
    if experts:
        per_expert = 3 * config.hidden_size * (getattr(config, "moe_intermediate_size", None) or config.intermediate_size)
        params -= (experts - config.num_experts_per_tok) * per_expert * config.num_hidden_layers
    attention = 0.0
    if hasattr(config, "num_attention_heads") and getattr(config, "model_type", "") != "mamba2":
        attention = 2 * 2 * config.num_hidden_layers * (seq / 2) * config.hidden_size
    return 2 * params + attention


def run_case(case: Case, device: str, batch: int, seq: int, repeats: int, fused: bool = False,
             reference_cache: Path | None = None) -> dict:
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = case.build(device, dtype)
    head = resolve_exit_head(model)
    config = model.config.get_text_config()
    vocab, d, n_layers = config.vocab_size, config.hidden_size, head.n_layers
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (batch, seq), generator=generator).to(device)
    encoded = EncodedBatch(ids, torch.ones_like(ids), torch.ones_like(ids, dtype=torch.bool), list(range(batch)))
    n_tokens = batch * seq

    def forward():
        with torch.inference_mode():
            return model(input_ids=ids, use_cache=False).logits

    def naive():
        return naive_stats(model, ids, head.final_norm, head.lm_head, head.blocks[-1], softcap=head.logit_softcap)

    def engine():
        residuals, logits = capture_residuals(model, head, encoded)
        return stats_for_tokens(head, residuals.flatten(1, 2), logits.flatten(0, 1))

    def engine_fused():
        residuals, logits = capture_residuals(model, head, encoded)
        return stats_for_tokens(head, residuals.flatten(1, 2), logits.flatten(0, 1), fused=True)

    def engine_kernel():
        residuals, logits = capture_residuals(model, head, encoded)
        return stats_for_tokens(head, residuals.flatten(1, 2), logits.flatten(0, 1), fused="kernel")

    gram = gram_head(head, dtype=torch.float32) if supports_dspace(head) else None

    def dspace():
        residuals, _ = capture_residuals(model, head, encoded)
        values = dspace_stats(head, gram, residuals.flatten(1, 2))
        return torch.stack([values[name].float().cpu() for name in DSPACE_STATS], dim=-1)

    result: dict = {"device": device, "dtype": str(dtype).removeprefix("torch."), "tokens": n_tokens,
                    "vocab": vocab, "d_model": d, "n_layers": n_layers}
    t_fwd, _, mem_fwd = _timed(device, forward, repeats)
    t_naive, naive_out, mem_naive = _timed(device, naive, repeats)
    naive_out = naive_out.float().cpu()
    t_engine, engine_out, mem_engine = _timed(device, engine, repeats)
    residuals, logits = capture_residuals(model, head, encoded)
    cached = reference_cache / f"{case.name}-{batch}x{seq}.pt" if reference_cache else None
    reference = _reference(head, residuals.flatten(1, 2), logits.flatten(0, 1), cached)
    engine_err, naive_err = _errors(engine_out, reference), _errors(naive_out, reference)
    result.update(
        forward_tok_s=n_tokens / t_fwd, naive_tok_s=n_tokens / t_naive, engine_tok_s=n_tokens / t_engine,
        speedup=t_naive / t_engine, max_abs_diff=max(engine_err.values()), max_abs_diff_by_stat=engine_err,
        naive_max_abs_diff=max(naive_err.values()), naive_max_abs_diff_by_stat=naive_err,
        engine_vs_naive_max_abs_diff=float((engine_out - naive_out).abs().max()),
        top1_agreement=float((engine_out[..., 0] == naive_out[..., 0]).float().mean()),
        peak_mem_bytes=int(mem_engine.peak), naive_peak_mem_bytes=int(mem_naive.peak), forward_peak_mem_bytes=int(mem_fwd.peak),
    )
    if device == "cpu":
        result.update(_float64_head_check(head, residuals.flatten(1, 2), engine_out, naive_out))
    del residuals, logits
    if fused:
        t_fused, fused_out, mem_fused = _timed(device, engine_fused, repeats)
        result.update(fused_tok_s=n_tokens / t_fused, fused_speedup=t_naive / t_fused,
                      fused_max_abs_diff=max(_errors(fused_out, reference).values()), fused_peak_mem_bytes=int(mem_fused.peak))
    if fused and device == "cuda" and lens_kernel.kernel_available(head, torch.device(device)):
        t_kernel, kernel_out, mem_kernel = _timed(device, engine_kernel, repeats)
        result.update(kernel_tok_s=n_tokens / t_kernel, kernel_speedup=t_naive / t_kernel,
                      kernel_max_abs_diff=max(_errors(kernel_out, reference).values()),
                      kernel_peak_mem_bytes=int(mem_kernel.peak),
                      kernel_tuned_config=str(getattr(lens_kernel._tuned(), "best_config", None)))
    if gram is not None:
        t_dspace, dspace_out, _ = _timed(device, dspace, repeats)
        columns = [STAT_COLUMNS.index(n) for n in DSPACE_STATS]
        result.update(dspace_tok_s=n_tokens / t_dspace, dspace_speedup=t_naive / t_dspace,
                      dspace_max_abs_diff=float((dspace_out.double() - reference[..., columns]).abs().max()))
    if device == "cuda":
        flops = _forward_flops_per_token(model, seq) + 2 * (n_layers - 1) * d * vocab
        roofline = H200_BF16_FLOPS / flops
        result.update(roofline_tok_s=roofline, roofline_frac=result["engine_tok_s"] / roofline,
                      naive_roofline_frac=result["naive_tok_s"] / roofline,
                      forward_only_roofline_frac=result["forward_tok_s"] / (H200_BF16_FLOPS / _forward_flops_per_token(model, seq)))
        if "kernel_tok_s" in result:
            result["kernel_roofline_frac"] = result["kernel_tok_s"] / roofline
    model = None  # frees the weights before the next case (the closures above are done with them)
    if device == "cuda":
        torch.cuda.empty_cache()
    return result


def _reference(head, residuals: torch.Tensor, logits: torch.Tensor, cached: Path | None) -> torch.Tensor:
    """The float64 lens, computed once per case: the allocator children see identical
    inputs, so the second one reads what the first one wrote."""
    if cached is not None and cached.exists():
        return torch.load(cached)
    reference = float64_lens(head, residuals, logits).cpu()
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp")
        torch.save(reference, tmp)
        os.replace(tmp, cached)
    return reference


def _errors(values: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Largest absolute difference from the float64 reference, per stat."""
    worst = (values.double() - reference).abs().amax(dim=(0, 1))
    return {name: float(v) for name, v in zip(STAT_COLUMNS, worst)}


F64_HEAD_TOKENS = 64  # tokens of the float64-head check: a float64 unembedding is slow


def _float64_head_check(head, residuals: torch.Tensor, engine_out: torch.Tensor, naive_out: torch.Tensor) -> dict:
    """Both sides against a lens whose exit head also runs in float64 (first tokens): the
    part of the error that comes from float32 logits, which no float32 lens can remove."""
    reference = float64_head_lens(head, residuals[:, :F64_HEAD_TOKENS].cpu())
    n = reference.shape[1]
    engine_err, naive_err = _errors(engine_out[:, :n], reference), _errors(naive_out[:, :n], reference)
    return {"f64_head_tokens": n, "engine_max_abs_diff_f64_head": max(engine_err.values()),
            "naive_max_abs_diff_f64_head": max(naive_err.values()),
            "engine_max_abs_diff_f64_head_by_stat": engine_err, "naive_max_abs_diff_f64_head_by_stat": naive_err}


def _print(name: str, r: dict) -> None:
    line = (f"{name:<48} fwd {r['forward_tok_s']:9.1f}  naive {r['naive_tok_s']:9.1f}  engine {r['engine_tok_s']:9.1f} tok/s"
            f"  ×{r['speedup']:.2f}  vs float64: engine {r['max_abs_diff']:.1e}, naive {r['naive_max_abs_diff']:.1e}")
    if "dspace_tok_s" in r:
        line += f"  d-space {r['dspace_tok_s']:9.1f} ×{r['dspace_speedup']:.1f} (diff {r['dspace_max_abs_diff']:.1e})"
    if "engine_max_abs_diff_f64_head" in r:
        line += f"  (float64 head too: engine {r['engine_max_abs_diff_f64_head']:.1e})"
    mib = {k: r[k] / 2**20 for k in ("peak_mem_bytes", "naive_peak_mem_bytes", "forward_peak_mem_bytes")}
    line += f"  peak {mib['peak_mem_bytes']:.0f} MiB (naive {mib['naive_peak_mem_bytes']:.0f}, fwd {mib['forward_peak_mem_bytes']:.0f})"
    if "fused_tok_s" in r:
        line += f"  fused {r['fused_tok_s']:9.1f} ×{r['fused_speedup']:.2f}"
    if "kernel_tok_s" in r:
        line += f"  kernel {r['kernel_tok_s']:9.1f} ×{r['kernel_speedup']:.2f} (diff {r['kernel_max_abs_diff']:.1e})"
    if "roofline_frac" in r:
        line += f"  roofline {r['roofline_frac']:.0%} (naive {r['naive_roofline_frac']:.0%})"
        if "fused_tok_s" in r:
            line += f" fused {r['fused_tok_s'] / r['roofline_tok_s']:.0%}"
        if "kernel_tok_s" in r:
            line += f" kernel {r['kernel_roofline_frac']:.0%}"
    print(line, flush=True)


def _machine() -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def run_all(device: str, names: list[str] | None, batch: int, seq: int, repeats: int, label: str, out: dict, fused: bool,
            reference_cache: Path | None = None) -> None:
    for case in CASES:
        if device not in case.devices or (names and case.name not in names):
            continue
        key = f"{device}/{case.name}" + (f"/{label}" if label else "")
        try:
            out[key] = run_case(case, device, batch, seq, repeats, fused, reference_cache)
            _print(key, out[key])
        except Exception as exc:  # a case that cannot run is reported, not fatal
            out[key] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"{key:<48} FAILED: {type(exc).__name__}: {exc}", flush=True)


def _write(payload: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


ALLOCATORS = {"malloc-default": {}, "malloc-reuse": {"MALLOC_MMAP_MAX_": "0"}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="*", help="case names (default: all for the device)")
    parser.add_argument("--tokens", default=None, help="BATCHxSEQ (default 4x128 on CPU, 4x1024 on GPU)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    parser.add_argument("--fused", action="store_true", default=None, help="also time the torch.compile engine (default on GPU)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--reference-cache", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    batch, seq = map(int, (args.tokens or ("4x1024" if args.device == "cuda" else "4x128")).split("x"))
    repeats = args.repeats or (3 if args.device == "cuda" else 1)
    cases: dict = {}
    if args.child is not None or args.device == "cuda":
        fused = args.fused if args.fused is not None else args.device == "cuda"
        run_all(args.device, args.cases, batch, seq, repeats, args.child or "", cases, fused, args.reference_cache)
        _write({"machine": _machine(), "cases": cases}, args.output)
        return 0
    # CPU: one child process per allocator setting; glibc reads MALLOC_* at start-up
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".reference-", dir=args.output.parent) as reference_cache:
        for label, env in ALLOCATORS.items():
            child_out = args.output.with_name(f".{label}.json")
            cmd = [sys.executable, "-m", "benchmarks.run", "--device", "cpu", "--tokens", f"{batch}x{seq}",
                   "--repeats", str(repeats), "--output", str(child_out), "--child", label,
                   "--reference-cache", reference_cache]
            if args.cases:
                cmd += ["--cases", *args.cases]
            if args.fused:
                cmd += ["--fused"]
            subprocess.run(cmd, env={**os.environ, **env}, check=True)
            cases.update(json.loads(child_out.read_text())["cases"])
            child_out.unlink()
    _write({"machine": _machine(), "cases": cases}, args.output)
    print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
