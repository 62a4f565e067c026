"""token_layer_stats [m × w]: per-token, per-layer lens stats, and the freshness of stored ones."""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from eexit_core import settings as settings_defaults
from eexit_core.lens.engine import PromptTooLongError, model_context_length, overflowing, token_layer_stats
from eexit_core.models.checkpoints import load_model
from eexit_core.registry import ModelEntry, WorkloadEntry
from eexit_core.stages.checkpoint import read_checkpoint
from eexit_core.stages.common import TOKEN_STATS, _require, data_version
from eexit_core.storage.artifacts import read_parquet_metadata, sha256_text, write_parquet
from eexit_core.storage.provenance import code_version, library_versions
from eexit_core.storage.workspace import Workspace


@dataclass(frozen=True)
class LensSettings:
    top_k: int = settings_defaults.TOP_K
    batch_size: int = settings_defaults.BATCH_SIZE
    device: str = "cpu"
    # None: every stat. Only cosines (logit_cos, logit_cos_raw, hidden_cos) switches the
    # lens to d-space: much faster, but no oracle exits (they need top1_match).
    stats: tuple[str, ...] | None = None
    # "eager" | "compiled" | "kernel": how the vocabulary-wide stats run (lens.LENS_ENGINES)
    engine: str = settings_defaults.LENS_ENGINE
    # None: the lens runs the model; a dtype: it reads layer_activations dumped in it and
    # loads the exit head alone (settings.ACTIVATION_DUMPS)
    dump_dtype: str | None = None


@dataclass(frozen=True)
class LensInputs:
    """A partition's prompts rendered for its model, and the model that reads them."""

    partition: str
    prompts_path: Path
    prompt_ids: pl.Series
    checkpoint: object  # eexit_core.models.checkpoints.Checkpoint
    model: object
    tokenizer: object
    texts: list[str]
    over_context: list[int]  # indices of the prompts longer than the model's context


def lens_inputs(ws: Workspace, model: ModelEntry, workload: WorkloadEntry, device: str) -> LensInputs:
    """Load the partition's prompts and model and render the prompts as the lens reads them;
    a workload whose every prompt overflows with over_context: skip is refused here."""
    from eexit_core.workloads.rendering import render_texts

    partition = f"{model.model_id}|{workload.workload_id}"
    prompts_path = _require(ws.prompts_path(workload.workload_id), "workload_prompts", workload.workload_id)
    prompts = pl.read_parquet(prompts_path)
    if prompts.is_empty():
        raise ValueError(f"workload {workload.workload_id!r} has no prompts")
    checkpoint = read_checkpoint(ws, model.model_id)
    lm, tokenizer = load_model(checkpoint, device=device)
    texts = render_texts(prompts, tokenizer, use_chat_template=workload.chat_template)
    context_length = model_context_length(lm)
    over = overflowing(tokenizer, texts, max_tokens=workload.max_tokens, context_length=context_length)
    if workload.over_context == "skip" and len(over) == len(texts):
        raise PromptTooLongError(f"{partition}: every prompt is longer than {model.model_id}'s context ({context_length}); "
                                 f"nothing is left to measure with over_context: skip", context_length=context_length)
    return LensInputs(partition, prompts_path, prompts["prompt_id"], checkpoint, lm, tokenizer, texts, over)


@contextmanager
def prompts_named_on_overflow(ws: Workspace, inputs: LensInputs, model: ModelEntry, workload: WorkloadEntry):
    """A prompt over the model's context, named by its prompt id and with what to change."""
    try:
        yield
    except PromptTooLongError as exc:
        if exc.index is None:
            raise
        raise PromptTooLongError(
            f"{inputs.partition}: prompt {inputs.prompt_ids[exc.index]!r} has {exc.n_tokens} tokens but {model.model_id}'s "
            f"context is {exc.context_length}; set a smaller max_tokens for {workload.workload_id!r} in "
            f"{ws.workloads_registry}, or over_context: truncate_left or skip",
            index=exc.index, n_tokens=exc.n_tokens, context_length=exc.context_length,
        ) from exc


def build_token_layer_stats(ws: Workspace, model: ModelEntry, workload: WorkloadEntry,
                            settings: LensSettings = LensSettings()) -> pl.DataFrame:
    """Per-token, per-layer stats of one model on one workload, stored as Parquet: live
    from the model, or from its activation dump with the exit head alone."""
    if settings.dump_dtype is not None:
        return _token_layer_stats_from_dump(ws, model, workload, settings)
    inputs = lens_inputs(ws, model, workload, settings.device)
    with prompts_named_on_overflow(ws, inputs, model, workload):
        stats = token_layer_stats(
            inputs.model, inputs.tokenizer, inputs.texts, top_k=settings.top_k, batch_size=settings.batch_size,
            max_tokens=workload.max_tokens, stats=settings.stats, engine=settings.engine,
            overflow=workload.over_context,
        )
    over = {"rule": workload.over_context, "prompt_ids": [inputs.prompt_ids[i] for i in inputs.over_context]}
    return _write_token_stats(ws, model, workload, settings, stats, inputs.prompt_ids, inputs.checkpoint.checksum,
                              inputs.prompts_path, over)


def _token_layer_stats_from_dump(ws: Workspace, model: ModelEntry, workload: WorkloadEntry,
                                 settings: LensSettings) -> pl.DataFrame:
    from eexit_core.lens.activations import ActivationDumpError, read_manifest, token_layer_stats_from_dump
    from eexit_core.models.checkpoints import load_exit_head
    from eexit_core.stages.layer_activations import dump_problem

    checkpoint = read_checkpoint(ws, model.model_id)
    prompts_path = _require(ws.prompts_path(workload.workload_id), "workload_prompts", workload.workload_id)
    target = ws.dump_dir(model.model_id, workload.workload_id)
    problem = dump_problem(ws, model.model_id, workload, settings.dump_dtype)
    if problem is not None:
        raise ActivationDumpError(f"{problem}; materialise layer_activations [{model.model_id}|{workload.workload_id}] "
                                  "to dump it again")
    over_context = read_manifest(target, verify=False).inputs["over_context"]
    stats = token_layer_stats_from_dump(
        load_exit_head(checkpoint, device=settings.device), target, stats=settings.stats, top_k=settings.top_k,
        engine_name=settings.engine, model_checksum=checkpoint.checksum,
        prompts_checksum=read_parquet_metadata(prompts_path).get("checksum"), verify=False)
    return _write_token_stats(ws, model, workload, settings, stats, pl.read_parquet(prompts_path, columns=["prompt_id"])["prompt_id"],
                              checkpoint.checksum, prompts_path, over_context)


def _write_token_stats(ws: Workspace, model: ModelEntry, workload: WorkloadEntry, settings: LensSettings,
                       stats: pl.DataFrame, prompt_ids: pl.Series, model_checksum: str, prompts_path: Path,
                       over_context: dict) -> pl.DataFrame:
    stats = stats.with_columns(
        pl.lit(model.model_id).alias("model_id"),
        pl.lit(workload.workload_id).alias("workload_id"),
        prompt_ids.gather(stats["sample"]).alias("prompt_id"),
    )
    meta = {
        "partition": f"{model.model_id}|{workload.workload_id}",
        "lens_version": lens_version(settings.engine),
        "lens_engine": settings.engine,
        "model_checksum": model_checksum,
        "workload_checksum": read_parquet_metadata(prompts_path).get("checksum"),
        "seed": workload.seed,
        "max_tokens": workload.max_tokens,
        # the prompts longer than the model's context, and what became of them (over_context)
        "over_context": over_context,
        "top_k": settings.top_k,
        "stats": list(settings.stats) if settings.stats else None,
        # None: the residual stream came live from the model; a dtype: from a dump in it
        "dump_dtype": settings.dump_dtype,
        "code_version": code_version(),
        "libraries": library_versions(),
    }
    write_parquet(stats, ws.partition_path(TOKEN_STATS, model.model_id, workload.workload_id), metadata=meta)
    return stats


def lens_modules(engine: str = settings_defaults.LENS_ENGINE) -> list[Path]:
    """The code that turns a checkpoint and prompts into token stats: loading the model,
    rendering the prompts, the exit head, the vocabulary-space and d-space lenses, reading
    an activation dump (and the Triton kernel for stats it computed). `dvc.yaml`'s stats
    stage depends on the same files."""
    from eexit_core.lens import activations, gram
    from eexit_core.lens import engine as lens
    from eexit_core.models import adapters, checkpoints
    from eexit_core.workloads import rendering

    modules = [lens, adapters, gram, checkpoints, rendering, activations]
    if engine == "kernel":
        from eexit_core.lens import kernel as lens_kernel

        modules.append(lens_kernel)
    return [Path(m.__file__) for m in modules]


def lens_version(engine: str = settings_defaults.LENS_ENGINE) -> str:
    """Checksum of the code that computes token stats: a change invalidates stored stats."""
    return sha256_text(*(path.read_text() for path in lens_modules(engine)))[:16]


def lens_code_version(settings: LensSettings = LensSettings()) -> str:
    """The Dagster code version of `token_layer_stats`: the lens code of the chosen engine
    and the settings that change what it computes (not batch size or device). Built from
    the deployment's default settings, so changing EEXIT_LENS_ENGINE or EEXIT_STATS marks
    every stats partition stale in the UI, as a code change does."""
    stats = list(settings.stats) if settings.stats else None
    return sha256_text(lens_version(settings.engine), settings.engine, str(settings.top_k), json.dumps(stats),
                       json.dumps(settings.dump_dtype))[:16]


# the stored fields that decide a stats partition's content (its Dagster data version)
STATS_VERSION_FIELDS = ("lens_version", "lens_engine", "model_checksum", "workload_checksum", "top_k", "stats", "max_tokens",
                        "over_context", "dump_dtype")


def token_stats_data_version(ws: Workspace, model_id: str, workload_id: str) -> str:
    return data_version(read_parquet_metadata(ws.partition_path(TOKEN_STATS, model_id, workload_id)), STATS_VERSION_FIELDS)


def stats_input_problem(ws: Workspace, meta: dict, workload: WorkloadEntry, model_checksum: str | None) -> str | None:
    """Why stored stats (their Parquet metadata) no longer match their inputs as they are now
    (checkpoint, prompts, token cap, the lens code of the engine that made them), or None."""
    if model_checksum is None:
        return "the model's checkpoint is unavailable or not prepared"
    if meta.get("model_checksum") != model_checksum:
        return "computed from another checkpoint (its weights changed)"
    prompts = ws.prompts_path(workload.workload_id)
    if not prompts.is_file() or meta.get("workload_checksum") != read_parquet_metadata(prompts).get("checksum"):
        return "computed from other prompts"
    if meta.get("max_tokens") != workload.max_tokens:
        return f"computed with max_tokens {meta.get('max_tokens')}, the registry now says {workload.max_tokens}"
    if meta.get("lens_version") != lens_version(meta.get("lens_engine") or settings_defaults.LENS_ENGINE):
        return "computed by older lens code"
    over = meta.get("over_context") or {}
    if over.get("prompt_ids") and over.get("rule") != workload.over_context:
        return f"prompts over the context were handled by over_context {over.get('rule')}, the registry now says {workload.over_context}"
    return None


def token_stats_fresh(ws: Workspace, model_id: str, workload: WorkloadEntry, settings: LensSettings) -> bool:
    """True when the stored stats were made from the current checkpoint, prompts and code,
    with these settings."""
    path = ws.partition_path(TOKEN_STATS, model_id, workload.workload_id)
    record = ws.checkpoint_record(model_id)
    if not (path.is_file() and record.is_file()):
        return False
    meta = read_parquet_metadata(path)
    return (
        stats_input_problem(ws, meta, workload, json.loads(record.read_text()).get("checksum")) is None
        and meta.get("lens_engine", settings_defaults.LENS_ENGINE) == settings.engine
        and meta.get("top_k") == settings.top_k
        and meta.get("stats") == (list(settings.stats) if settings.stats else None)
        and meta.get("dump_dtype") == settings.dump_dtype
    )


def _provenance_columns(meta: dict) -> list[pl.Expr]:
    return [
        pl.lit(meta.get("code_version"), dtype=pl.String).alias("code_version"),
        pl.lit(meta.get("model_checksum"), dtype=pl.String).alias("model_checksum"),
        pl.lit(meta.get("workload_checksum"), dtype=pl.String).alias("workload_checksum"),
        pl.lit(meta.get("seed"), dtype=pl.Int64).alias("seed"),
    ]


def _token_stats(ws: Workspace, model_id: str, workload_id: str) -> tuple[pl.DataFrame, dict]:
    path = _require(ws.partition_path(TOKEN_STATS, model_id, workload_id), TOKEN_STATS, f"{model_id}|{workload_id}")
    return pl.read_parquet(path), read_parquet_metadata(path)
