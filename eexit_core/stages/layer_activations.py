"""layer_activations [m × w]: every scored token's residual stream dumped once (issue 25),
and whether a stored dump still serves the partition's inputs.

With dumps on (settings.ACTIVATION_DUMPS), `token_layer_stats` reads the dump with the
exit head alone instead of running the model; a new statistic or exit head then costs the
head's matmuls, not the forward pass."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from eexit_core import settings as settings_defaults
from eexit_core.lens.activations import ActivationDumpError, DumpManifest, dump_activations, read_manifest
from eexit_core.registry import ModelEntry, WorkloadEntry
from eexit_core.stages.common import data_version
from eexit_core.stages.token_stats import lens_inputs, prompts_named_on_overflow
from eexit_core.storage.artifacts import read_parquet_metadata, sha256_text
from eexit_core.storage.provenance import code_version
from eexit_core.storage.workspace import Workspace


@dataclass(frozen=True)
class DumpSettings:
    dtype: str = "float32"  # settings.ACTIVATION_DUMP_CHOICES but "off"
    budget_gib: float = settings_defaults.DUMP_BUDGET_GIB  # the largest dump of one partition
    # prompts per forward pass; the shards follow the batches, so the stats read them back
    # in the live lens's token groups (and a float32 dump gives its numbers exactly)
    batch_size: int = settings_defaults.BATCH_SIZE
    device: str = "cpu"


def capture_modules() -> list[Path]:
    """The code that turns a checkpoint and prompts into a dump: loading and rendering, the
    residual capture, and the dump format."""
    from eexit_core.lens import activations, engine
    from eexit_core.models import adapters, checkpoints
    from eexit_core.workloads import rendering

    return [Path(m.__file__) for m in (engine, adapters, checkpoints, rendering, activations)]


def capture_version() -> str:
    return sha256_text(*(path.read_text() for path in capture_modules()))[:16]


def activations_code_version(settings: DumpSettings = DumpSettings()) -> str:
    """The Dagster code version of `layer_activations`: the capture code and the dtype."""
    return sha256_text(capture_version(), settings.dtype)[:16]


def build_layer_activations(ws: Workspace, model: ModelEntry, workload: WorkloadEntry,
                            settings: DumpSettings = DumpSettings(),
                            announce: Callable[[str], None] | None = None) -> DumpManifest:
    """Dump the residual stream of every token the lens scores in this partition, after
    checking its size against the budget (`announce` hears the estimate first)."""
    from eexit_core.lens.activations import dump_bytes, scored_token_count
    from eexit_core.models.adapters import resolve_exit_head

    inputs = lens_inputs(ws, model, workload, settings.device)
    if announce is not None:
        n_tokens = scored_token_count(inputs.model, inputs.tokenizer, inputs.texts, max_tokens=workload.max_tokens,
                                      overflow=workload.over_context)
        head = resolve_exit_head(inputs.model)
        d_model = int(head.lm_head.weight.shape[-1])
        size = dump_bytes(n_tokens, head.n_layers, d_model, settings.dtype)
        announce(f"{inputs.partition}: dumping {n_tokens} tokens × {head.n_layers} layers × d_model {d_model} in "
                 f"{settings.dtype}, {size / 2**20:.1f} MiB (budget {settings.budget_gib:g} GiB)")
    provenance = {
        "max_tokens": workload.max_tokens,
        "over_context": {"rule": workload.over_context, "prompt_ids": [inputs.prompt_ids[i] for i in inputs.over_context]},
        "capture_version": capture_version(),
        "batch_size": settings.batch_size,
        "seed": workload.seed,
        "code_version": code_version(),
    }
    with prompts_named_on_overflow(ws, inputs, model, workload):
        return dump_activations(
            inputs.model, inputs.tokenizer, inputs.texts, ws.dump_dir(model.model_id, workload.workload_id),
            dtype=settings.dtype, batch_size=settings.batch_size, max_tokens=workload.max_tokens,
            overflow=workload.over_context, budget_bytes=int(settings.budget_gib * 2**30),
            model_checksum=inputs.checkpoint.checksum,
            prompts_checksum=read_parquet_metadata(inputs.prompts_path).get("checksum"), inputs=provenance,
        )


def dump_problem(ws: Workspace, model_id: str, workload: WorkloadEntry, dtype: str | None, *,
                 verify: bool = True) -> str | None:
    """Why the stored dump cannot serve this partition as it is now (missing, damaged,
    another checkpoint, prompts, dtype, token cap or capture code), with its path; None
    when it can. `verify` re-hashes every shard (the truncated or damaged ones); a None
    dtype takes a dump in any."""
    target = ws.dump_dir(model_id, workload.workload_id)
    record = ws.checkpoint_record(model_id)
    prompts = ws.prompts_path(workload.workload_id)
    if not (record.is_file() and prompts.is_file()):
        return f"{target}: the checkpoint or the prompts are not prepared"
    try:
        manifest = read_manifest(target, model_checksum=json.loads(record.read_text()).get("checksum"),
                                 prompts_checksum=read_parquet_metadata(prompts).get("checksum"), verify=verify)
    except ActivationDumpError as exc:
        return str(exc)
    inputs = manifest.inputs
    if dtype is not None and manifest.dtype != dtype:
        return f"{target}: dumped in {manifest.dtype}, the settings ask for {dtype}"
    if inputs.get("max_tokens") != workload.max_tokens:
        return f"{target}: dumped with max_tokens {inputs.get('max_tokens')}, the registry now says {workload.max_tokens}"
    if inputs.get("capture_version") != capture_version():
        return f"{target}: dumped by older capture code"
    over = inputs.get("over_context") or {}
    if over.get("prompt_ids") and over.get("rule") != workload.over_context:
        return (f"{target}: prompts over the context were handled by over_context {over.get('rule')}, "
                f"the registry now says {workload.over_context}")
    return None


def layer_activations_fresh(ws: Workspace, model_id: str, workload: WorkloadEntry, settings: DumpSettings) -> bool:
    return dump_problem(ws, model_id, workload, settings.dtype) is None


def layer_activations_data_version(ws: Workspace, model_id: str, workload_id: str) -> str:
    """What decides a dump's content, for Dagster: an identical dump made again keeps it,
    so the stats read from it are not marked stale."""
    manifest = read_manifest(ws.dump_dir(model_id, workload_id), verify=False)
    fields = {"model_checksum": manifest.model_checksum, "prompts_checksum": manifest.prompts_checksum,
              "dtype": manifest.dtype, **{k: manifest.inputs.get(k) for k in ("max_tokens", "over_context", "capture_version")}}
    return data_version(fields, tuple(fields))
