"""What the fused lens kernel asks of an H200, found without one.

Each tile config the kernel autotunes over is compiled ahead of time for Hopper (sm_90a)
with the specialisation a real launch gets (16-byte aligned pointers; vocabulary, width
and strides divisible by 16 where they are), and Triton's own ptxas reports registers,
spill bytes and shared memory. This catches what Triton's CPU interpreter cannot: a
kernel that does not compile for the GPU, a tile that needs more shared memory than a
block may have, a matmul that misses the tensor cores (no `wgmma`), and an epilogue
that spills. What a config *costs in time* still needs a GPU (`make bench` there).

    python -m benchmarks.kernel_resources [--vocab 128256 --d-model 4096] [--output F]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from eexit_core.lens import kernel as lens_kernel

RESULTS = Path(__file__).resolve().parent / "results"
HOPPER = 90
# the most shared memory one block may opt in to on sm_90 (H100 / H200)
HOPPER_SHARED_LIMIT = 227 * 1024
# the Llama-3-8B anchor: 31 exit layers a token, top-10 overlap
ANCHOR = {"vocab": 128256, "d_model": 4096, "rows_per_token": 31, "top_k": 10}

_POINTERS = {"X": "*{w}", "W": "*{w}", "P_FINAL": "*fp32", "C_FINAL": "*fp32", "TOP_IDS": "*i32", "CAND": "*fp32",
             "OUT": "*fp32", "ARG": "*i32", "RANKS": "*i32", "COUNTED": "*i32"}


@dataclass(frozen=True)
class KernelBuild:
    """One compiled config: its tiles and what ptxas says it uses per thread / block."""

    block_m: int
    block_n: int
    block_k: int
    warps: int
    stages: int
    weight_dtype: str
    softcap: float
    registers: int
    spill_store_bytes: int
    spill_load_bytes: int
    shared_bytes: int
    tensor_cores: bool

    @property
    def fits(self) -> bool:
        return self.shared_bytes <= HOPPER_SHARED_LIMIT


def _int_values(vocab: int, d_model: int, rows_per_token: int) -> dict[str, int]:
    # a launch's integer arguments (n_rows is never known ahead, so never specialised)
    return {"vocab": vocab, "d_model": d_model, "rows_per_token": rows_per_token,
            "stride_x": d_model, "stride_w": d_model, "stride_final": vocab}


def _signature(kernel, weight_dtype: str, vocab: int, d_model: int, rows_per_token: int):
    ints = _int_values(vocab, d_model, rows_per_token)
    signature, aligned = {}, {}
    for index, name in enumerate(kernel.arg_names):
        if name in _POINTERS:
            signature[name] = _POINTERS[name].format(w=weight_dtype)
            aligned[(index,)] = [["tt.divisibility", 16]]  # torch allocations are 16-byte aligned
        elif name.isupper():
            signature[name] = "constexpr"
        else:
            signature[name] = "i32"
            if ints.get(name, 1) % 16 == 0:
                aligned[(index,)] = [["tt.divisibility", 16]]
    return signature, aligned


def _ptxas_report(ptx: str, arch: int) -> tuple[int, int, int]:
    from triton.backends.nvidia.compiler import get_ptxas

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "kernel.ptx"
        source.write_text(ptx)
        result = subprocess.run([get_ptxas(arch).path, "-v", f"--gpu-name=sm_{arch}a", str(source), "-o", os.devnull],
                                capture_output=True, text=True, check=True)
    registers = re.search(r"Used (\d+) registers", result.stderr)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", result.stderr)
    if registers is None or spills is None:
        raise RuntimeError(f"ptxas printed no resource usage:\n{result.stderr}")
    return int(registers.group(1)), int(spills.group(1)), int(spills.group(2))


def compile_config(
    config: tuple[int, int, int, int, int], weight_dtype: str = "bf16", softcap: float = 0.0,
    vocab: int = ANCHOR["vocab"], d_model: int = ANCHOR["d_model"], rows_per_token: int = ANCHOR["rows_per_token"],
    top_k: int = ANCHOR["top_k"], arch: int = HOPPER,
) -> KernelBuild:
    """Compile the kernel for `sm_<arch>a` in one tile config (no GPU needed)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    block_m, block_n, block_k, warps, stages = config
    if os.environ.get("TRITON_INTERPRET") == "1":
        return _compile_elsewhere(config, weight_dtype, softcap, vocab, d_model, rows_per_token, top_k, arch)
    kernel = lens_kernel._lens_rows_kernel
    signature, aligned = _signature(kernel, weight_dtype, vocab, d_model, rows_per_token)
    constants = {"TOP_K": top_k, "K_PAD": triton.next_power_of_2(top_k), "SOFTCAP": float(softcap),
                 "EXACT_FP32": weight_dtype == "fp32", "BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k}
    source = ASTSource(kernel, signature, constants, aligned)
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32),
                              options={"num_warps": warps, "num_stages": stages})
    ptx = compiled.asm["ptx"]
    registers, spill_stores, spill_loads = _ptxas_report(ptx, arch)
    return KernelBuild(block_m, block_n, block_k, warps, stages, weight_dtype, float(softcap), registers,
                       spill_stores, spill_loads, int(compiled.metadata.shared), "wgmma" in ptx)


def _compile_elsewhere(config, weight_dtype, softcap, vocab, d_model, rows_per_token, top_k, arch) -> KernelBuild:
    # Triton's interpreter (on in the tests) replaces `@triton.jit` kernels and changes how
    # kernels are traced, so the build runs in a fresh process without it
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    cmd = [sys.executable, "-m", "benchmarks.kernel_resources", "--one", ",".join(map(str, config)),
           "--weights", weight_dtype, "--softcap", str(softcap), "--vocab", str(vocab), "--d-model", str(d_model),
           "--rows-per-token", str(rows_per_token), "--top-k", str(top_k), "--arch", str(arch)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    if result.returncode != 0:
        raise RuntimeError(f"compiling {config} for sm_{arch}a failed:\n{result.stderr[-4000:]}")
    fields = json.loads(result.stdout.strip().splitlines()[-1])
    return KernelBuild(**fields)


def tuned_builds(weight_dtype: str = "bf16", softcap: float = 0.0, **shape: int) -> list[KernelBuild]:
    """Every config the autotuner times on a GPU, compiled for the H200."""
    return [compile_config(config, weight_dtype, softcap, **shape) for config in lens_kernel._GPU_CONFIGS]


def _print(builds: list[KernelBuild]) -> None:
    print(f"{'tiles (M×N×K)':<14} {'warps':>5} {'stages':>6} {'weights':>7} {'softcap':>7} {'regs':>5} "
          f"{'spill st/ld B':>14} {'shared KiB':>10} {'wgmma':>6} {'fits':>5}")
    for b in builds:
        print(f"{b.block_m}×{b.block_n}×{b.block_k:<6} {b.warps:>5} {b.stages:>6} {b.weight_dtype:>7} {b.softcap:>7g} "
              f"{b.registers:>5} {f'{b.spill_store_bytes}/{b.spill_load_bytes}':>14} {b.shared_bytes / 1024:>10.0f} "
              f"{str(b.tensor_cores):>6} {str(b.fits):>5}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=ANCHOR["vocab"])
    parser.add_argument("--d-model", type=int, default=ANCHOR["d_model"])
    parser.add_argument("--rows-per-token", type=int, default=ANCHOR["rows_per_token"])
    parser.add_argument("--top-k", type=int, default=ANCHOR["top_k"])
    parser.add_argument("--arch", type=int, default=HOPPER)
    parser.add_argument("--output", type=Path, default=RESULTS / "kernel_resources.json")
    parser.add_argument("--one", default=None, help="M,N,K,WARPS,STAGES: compile one config, print it as JSON")
    parser.add_argument("--weights", choices=("bf16", "fp16", "fp32"), default="bf16")
    parser.add_argument("--softcap", type=float, default=0.0)
    args = parser.parse_args(argv)
    shape = {"vocab": args.vocab, "d_model": args.d_model, "rows_per_token": args.rows_per_token}
    if args.one:
        config = tuple(int(part) for part in args.one.split(","))
        build = compile_config(config, args.weights, args.softcap, **shape, top_k=args.top_k, arch=args.arch)
        print(json.dumps(asdict(build)))
        return 0
    builds = []
    for weight_dtype, softcap in (("bf16", 0.0), ("bf16", 30.0), ("fp32", 0.0)):
        builds += tuned_builds(weight_dtype, softcap, **shape)
        _print(builds[-len(lens_kernel._GPU_CONFIGS):])
    payload = {"target": f"sm_{HOPPER}a", "shape": shape, "shared_limit_bytes": HOPPER_SHARED_LIMIT,
               "builds": [asdict(b) | {"fits": b.fits} for b in builds]}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, args.output)
    print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
