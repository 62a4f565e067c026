"""Layerwise activation dumps: the residual stream of every scored token kept once, so the
statistics (a new one, another exit head) are computed again without running the model.

A dump is a folder of safetensors shards, one per batch of the lens (so reading it back
walks the same token groups the live lens walks, and a float32 dump gives the live numbers
bit for bit), and a `manifest.json` written last:

    shard-00000.safetensors   residuals [L, N, d] (the dump's dtype), sample [N], position [N]
                              (int64), and routers [L, N, 3] for a mixture-of-experts model
    manifest.json             the model checksum and prompts fingerprint it was made from,
                              dtype, layers, width, tokens, and each shard's size and SHA-256

Any tool that reads safetensors opens a shard (`safetensors.torch.load_file`, or
`safe_open` to memory-map one tensor). The folder is written atomically: a dump killed or
out of disk halfway leaves nothing in its place. `dump_budget_problem` refuses, before
the model runs, a dump that would exceed a byte budget, naming the numbers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from eexit_core.errors import EexitError
from eexit_core.lens import engine
from eexit_core.models.adapters import ExitHead, resolve_exit_head

if TYPE_CHECKING:
    import polars as pl

MANIFEST = "manifest.json"
DUMP_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ActivationDumpError(EexitError, ValueError):
    """A dump that is missing, damaged or made from other inputs: it is not read."""


class DumpBudgetError(EexitError, ValueError):
    """A dump would be larger than the budget allows."""


@dataclass(frozen=True)
class ShardRecord:
    file: str
    n_tokens: int
    sha256: str


@dataclass(frozen=True)
class DumpManifest:
    model_checksum: str | None
    prompts_checksum: str | None
    dtype: str
    n_layers: int
    d_model: int
    n_tokens: int
    routers: bool
    shards: list[ShardRecord] = field(default_factory=list)
    # what else decided the content (the caller's: e.g. the token cap and the capture code)
    inputs: dict = field(default_factory=dict)

    @property
    def n_bytes(self) -> int:
        return dump_bytes(self.n_tokens, self.n_layers, self.d_model, self.dtype)


def dump_bytes(n_tokens: int, n_layers: int, d_model: int, dtype: str) -> int:
    """The residual stream's size: tokens × layers × d_model × bytes per value."""
    return n_tokens * n_layers * d_model * DUMP_DTYPES[dtype].itemsize


def scored_token_count(model: nn.Module, tokenizer, texts: Sequence[str], *, max_tokens: int | None = None,
                       overflow: str = "fail") -> int:
    """How many tokens the lens scores in `texts` (what a dump would hold), from the
    tokenizer alone: the lens's own batches, counted before the model runs."""
    encoded = engine.encode_texts(tokenizer, texts, max_tokens=max_tokens,
                                  context_length=engine.model_context_length(model), overflow=overflow)
    batches = engine.batches(encoded, batch_size=len(encoded) or 1, pad_id=0, bos_id=tokenizer.bos_token_id)
    return sum(int(batch.scored.sum()) for batch in batches)


def dump_budget_problem(n_tokens: int, n_layers: int, d_model: int, dtype: str, budget_bytes: int | None) -> str | None:
    """Why a dump of this size is refused (None: it fits the budget)."""
    size = dump_bytes(n_tokens, n_layers, d_model, dtype)
    if budget_bytes is None or size <= budget_bytes:
        return None
    return (f"an activation dump of {n_tokens} tokens × {n_layers} layers × d_model {d_model} × "
            f"{DUMP_DTYPES[dtype].itemsize} bytes ({dtype}) is {size / 2**20:.1f} MiB, over the budget of "
            f"{budget_bytes / 2**20:.1f} MiB; raise the budget, score fewer tokens or dump in a half-precision dtype")


def dump_activations(model: nn.Module, tokenizer, texts: Sequence[str], target: Path, *, dtype: str = "float32",
                     batch_size: int = 8, max_tokens: int | None = None, overflow: str = "fail",
                     budget_bytes: int | None = None, model_checksum: str | None = None,
                     prompts_checksum: str | None = None, inputs: dict | None = None) -> DumpManifest:
    """Run the model over `texts` once and keep every scored token's residual stream at
    every layer in `target`, shard by shard, atomically (a shard in memory at a time)."""
    from safetensors.torch import save_file

    from eexit_core.storage.artifacts import atomic_dir, sha256_file

    if dtype not in DUMP_DTYPES:
        raise ValueError(f"dump dtype must be one of {sorted(DUMP_DTYPES)}, got {dtype!r}")
    head = resolve_exit_head(model)
    d_model = int(head.lm_head.weight.shape[-1])
    problem = dump_budget_problem(scored_token_count(model, tokenizer, texts, max_tokens=max_tokens, overflow=overflow),
                                  head.n_layers, d_model, dtype, budget_bytes)
    if problem is not None:
        raise DumpBudgetError(problem)
    shards: list[ShardRecord] = []
    routers = False
    with atomic_dir(target) as tmp:
        for index, part in enumerate(engine.scored_residuals(model, tokenizer, texts, batch_size=batch_size,
                                                            max_tokens=max_tokens, overflow=overflow)):
            tensors = {
                "residuals": part.residuals.to(DUMP_DTYPES[dtype]).contiguous().cpu(),
                "sample": torch.tensor(part.samples, dtype=torch.int64),
                "position": torch.tensor(part.positions, dtype=torch.int64),
            }
            if part.routers is not None:
                tensors["routers"] = part.routers.float().contiguous().cpu()
                routers = True
            name = f"shard-{index:05d}.safetensors"
            save_file(tensors, tmp / name)
            shards.append(ShardRecord(name, len(part.samples), sha256_file(tmp / name)))
        manifest = DumpManifest(model_checksum, prompts_checksum, dtype, head.n_layers, d_model,
                                sum(s.n_tokens for s in shards), routers, shards, dict(inputs or {}))
        (tmp / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2, sort_keys=True) + "\n")
    return manifest


def read_manifest(target: Path, *, model_checksum: str | None = None, prompts_checksum: str | None = None,
                  verify: bool = True) -> DumpManifest:
    """The manifest of a complete dump made from these inputs; an `ActivationDumpError`
    naming the path and the reason otherwise (missing, damaged, another model or prompts)."""
    from eexit_core.storage.artifacts import sha256_file

    path = target / MANIFEST
    if not path.is_file():
        raise ActivationDumpError(f"{target}: no activation dump here ({MANIFEST} is missing)")
    try:
        raw = json.loads(path.read_text())
        manifest = DumpManifest(**{**raw, "shards": [ShardRecord(**s) for s in raw["shards"]]})
    except (ValueError, TypeError, KeyError) as exc:
        raise ActivationDumpError(f"{path}: not a readable dump manifest ({exc})") from exc
    if model_checksum is not None and manifest.model_checksum != model_checksum:
        raise ActivationDumpError(f"{target}: dumped from another checkpoint (model checksum {manifest.model_checksum}, "
                                  f"not {model_checksum})")
    if prompts_checksum is not None and manifest.prompts_checksum != prompts_checksum:
        raise ActivationDumpError(f"{target}: dumped from other prompts (fingerprint {manifest.prompts_checksum}, "
                                  f"not {prompts_checksum})")
    for shard in manifest.shards if verify else []:
        shard_path = target / shard.file
        if not shard_path.is_file():
            raise ActivationDumpError(f"{shard_path}: a shard of the dump is missing")
        if sha256_file(shard_path) != shard.sha256:
            raise ActivationDumpError(f"{shard_path}: the shard is damaged or truncated (its SHA-256 differs from the manifest's)")
    return manifest


def read_dump(target: Path, manifest: DumpManifest | None = None) -> Iterator[engine.ScoredResiduals]:
    """The dump's shards as the live lens's batches, residuals memory-mapped and cast to
    float32 (the lens's precision) one shard at a time."""
    from safetensors import safe_open

    manifest = manifest or read_manifest(target)
    for shard in manifest.shards:
        with safe_open(str(target / shard.file), framework="pt") as opened:
            residuals = opened.get_tensor("residuals").float()
            routers = opened.get_tensor("routers") if manifest.routers else None
            yield engine.ScoredResiduals(residuals, opened.get_tensor("sample").tolist(),
                                         opened.get_tensor("position").tolist(), routers)


def token_layer_stats_from_dump(head: ExitHead, target: Path, *, stats: Sequence[str] | None = None,
                                top_k: int = 10, engine_name: str = "eager", model_checksum: str | None = None,
                                prompts_checksum: str | None = None, verify: bool = True) -> "pl.DataFrame":
    """`token_layer_stats` rows from a dump: the exit head's part only, no forward pass
    (`verify=False`: the caller has just checked the shards' SHA-256)."""
    manifest = read_manifest(target, model_checksum=model_checksum, prompts_checksum=prompts_checksum, verify=verify)
    if manifest.n_layers != head.n_layers:
        raise ActivationDumpError(f"{target}: {manifest.n_layers} layers dumped, but the exit head's model has {head.n_layers}")
    return engine.stats_frame(head, read_dump(target, manifest), stats=stats, top_k=top_k, engine=engine_name,
                              routed=manifest.routers)
