"""tuned_lens [m]: a learned exit head per model, fitted on its activation dumps, and the
held-out token stats of the model's own head, the tuned head and the shuffled control.

The prompts of every workload alternate, in their drawn order, between the half the
translators are fitted on and the half they are judged on (`split_of`, as lossless
self-speculation chooses its (l, k)); the fitting half alternates again between the
prompts the fit reads and the validation prompts that choose, per layer, between the
fitted translator and the own head (`fit_role`). All three heads are read from the same dump on the
same held-out tokens, so their curves differ only by the head. Written per model:

    tuned_lens/<m>.safetensors        the translators (weight [L, d, d], bias [L, d])
    tuned_lens/<m>.parquet            the fit per layer: tuned and control, training KL
                                      of the own head, the start and the kept translator
    tuned_lens/<m>__<w>.parquet       held-out token stats, `exit_head` own | tuned | control
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import polars as pl
import torch

from eexit_core.evaluation.speculation_sweep import TEST, split_of
from eexit_core.lens import engine
from eexit_core.lens.activations import read_dump, read_manifest
from eexit_core.lens.tuned import (
    ConstantPrediction,
    LayerFit,
    TunedLensSettings,
    fit_report,
    fit_tuned_lens,
    translated,
)
from eexit_core.registry import ModelEntry, WorkloadEntry
from eexit_core.stages.checkpoint import read_checkpoint
from eexit_core.stages.common import TUNED_LENS, MissingUpstreamError, data_version, log
from eexit_core.storage.artifacts import read_parquet_metadata, sha256_text, write_parquet
from eexit_core.storage.provenance import code_version, library_versions
from eexit_core.storage.workspace import Workspace

EXIT_HEADS = ("own", "tuned", "control")


def tuned_code_modules() -> list[Path]:
    from eexit_core.lens import activations, tuned
    from eexit_core.models import adapters, checkpoints

    return [Path(m.__file__) for m in (tuned, engine, activations, adapters, checkpoints)]


def tuned_code_version(settings: TunedLensSettings = TunedLensSettings()) -> str:
    """The code and fit settings behind a stored tuned lens (also its Dagster code version)."""
    code = sha256_text(*(p.read_text() for p in tuned_code_modules()))
    return sha256_text(code, json.dumps(settings.__dict__, sort_keys=True))[:16]


def translators_path(ws: Workspace, model_id: str) -> Path:
    return ws.artifacts_dir / TUNED_LENS / f"{model_id}.safetensors"


def fit_path(ws: Workspace, model_id: str) -> Path:
    return ws.artifacts_dir / TUNED_LENS / f"{model_id}.parquet"


def _inputs(ws: Workspace, model_id: str, workloads: Sequence[WorkloadEntry]) -> dict:
    """What decides a model's tuned lens: its checkpoint and each workload's dump."""
    from eexit_core.stages.layer_activations import dump_problem

    problems = {w.workload_id: dump_problem(ws, model_id, w, None) for w in workloads}
    missing = {w: p for w, p in problems.items() if p is not None}
    if missing:
        raise MissingUpstreamError(
            f"{model_id}: the tuned lens reads activation dumps, and these cannot serve: "
            + "; ".join(f"{w}: {p}" for w, p in sorted(missing.items()))
            + f"; materialise layer_activations [{model_id}|…] first (python -m pipelines.run --stage tuned does)")
    dumps = {}
    for w in workloads:
        manifest = read_manifest(ws.dump_dir(model_id, w.workload_id), verify=False)
        dumps[w.workload_id] = {"prompts_checksum": manifest.prompts_checksum, "dtype": manifest.dtype,
                                "capture_version": manifest.inputs.get("capture_version")}
    return {"model_checksum": json.loads(ws.checkpoint_record(model_id).read_text()).get("checksum"), "dumps": dumps}


FIT, VALIDATION, HELD_OUT = "fit", "validation", "held_out"


def fit_role(sample: int) -> str:
    """What a prompt (by its index in the drawn order) is for: fitting, choosing per layer,
    or judging (the `test` half of `split_of`)."""
    if split_of(sample) == TEST:
        return HELD_OUT
    return FIT if (sample // 2) % 2 == 0 else VALIDATION


def _parts(ws: Workspace, model_id: str, workload_id: str, role: str) -> Iterator[engine.ScoredResiduals]:
    """A dump's tokens of the prompts with one role, shard by shard."""
    for part in read_dump(ws.dump_dir(model_id, workload_id)):
        keep = [i for i, sample in enumerate(part.samples) if fit_role(sample) == role]
        if keep:
            index = torch.tensor(keep)
            yield engine.ScoredResiduals(
                part.residuals[:, index], [part.samples[i] for i in keep], [part.positions[i] for i in keep],
                None if part.routers is None else part.routers[:, index])


def build_tuned_lens(ws: Workspace, model: ModelEntry, workloads: Sequence[WorkloadEntry],
                     settings: TunedLensSettings = TunedLensSettings(), *, device: str = "cpu",
                     progress: Callable[[str], None] = log.info) -> pl.DataFrame:
    """Fit the model's tuned lens and its shuffled control on the training prompts of every
    workload's dump, and store the held-out token stats of the three heads per workload."""
    import time

    from eexit_core.models.checkpoints import load_exit_head

    if not workloads:
        raise ValueError(f"{model.model_id}: the tuned lens needs at least one workload's dump")
    inputs = _inputs(ws, model.model_id, workloads)
    head = load_exit_head(read_checkpoint(ws, model.model_id), device=device)
    started = time.perf_counter()
    train = _streams(ws, model.model_id, workloads, FIT)
    validation = _streams(ws, model.model_id, workloads, VALIDATION)
    if train.shape[1] == 0:
        raise ValueError(f"{model.model_id}: no training tokens (every workload's fitting prompts are empty)")
    if validation.shape[1] == 0:
        validation = None  # too few prompts to set some aside: the training tokens choose
    tuned, tuned_fits = fit_tuned_lens(head, train, settings, validation=validation)
    progress(f"{model.model_id}: tuned lens fitted on {min(train.shape[1], settings.fit_tokens)} of {train.shape[1]} "
             f"training tokens, chosen per layer on {0 if validation is None else validation.shape[1]} validation "
             f"tokens, in {time.perf_counter() - started:.0f}s")
    control, control_fits = fit_tuned_lens(head, train, settings, validation=validation, shuffle_targets=True)
    constant = ConstantPrediction.fit(head, train)
    meta = {
        **inputs,
        "tuned_code_version": tuned_code_version(settings),
        "settings": settings.__dict__,
        "n_train_tokens": int(train.shape[1]),
        "n_validation_tokens": 0 if validation is None else int(validation.shape[1]),
        "split": "prompts in drawn order: 0 fit, 1 held out, 2 validation, 3 held out, then again",
        "code_version": code_version(),
        "libraries": library_versions(),
    }
    del train, validation
    for workload in workloads:
        started = time.perf_counter()
        frames = [engine.stats_frame(head, _parts(ws, model.model_id, workload.workload_id, HELD_OUT)).with_columns(
            pl.lit("own").alias("exit_head"))]
        for name, translators in (("tuned", tuned), ("control", control)):
            frames.append(engine.stats_frame(head, translated(_parts(ws, model.model_id, workload.workload_id, HELD_OUT),
                                                                translators)).with_columns(pl.lit(name).alias("exit_head")))
        constant_kl, constant_top1, n_tokens = constant.scores(head, _parts(ws, model.model_id, workload.workload_id,
                                                                             HELD_OUT))
        prompt_ids = pl.read_parquet(ws.prompts_path(workload.workload_id), columns=["prompt_id"])["prompt_id"]
        stats = pl.concat(frames)
        stats = stats.with_columns(pl.lit(model.model_id).alias("model_id"), pl.lit(workload.workload_id).alias("workload_id"),
                                   prompt_ids.gather(stats["sample"]).alias("prompt_id"))
        write_parquet(stats, ws.partition_path(TUNED_LENS, model.model_id, workload.workload_id), metadata={
            **meta, "workload_id": workload.workload_id, "held_out_tokens": n_tokens,
            "constant_kl": constant_kl, "constant_top1": constant_top1})
        progress(f"{model.model_id} × {workload.workload_id}: {n_tokens} held-out tokens through own, tuned and control "
                 f"heads in {time.perf_counter() - started:.0f}s")
    tuned.save(translators_path(ws, model.model_id), meta)
    fits = _fit_table(model.model_id, tuned_fits, control_fits)
    write_parquet(fits, fit_path(ws, model.model_id), metadata=meta)
    return fits


def _streams(ws: Workspace, model_id: str, workloads: Sequence[WorkloadEntry], role: str) -> torch.Tensor:
    """The residual streams [L, N, d] of every workload's prompts with one role."""
    parts = [p.residuals.float() for w in workloads for p in _parts(ws, model_id, w.workload_id, role)]
    if parts:
        return torch.cat(parts, dim=1)
    manifest = read_manifest(ws.dump_dir(model_id, workloads[0].workload_id), verify=False)
    return torch.zeros(manifest.n_layers, 0, manifest.d_model)


def _fit_table(model_id: str, tuned: list[LayerFit], control: list[LayerFit]) -> pl.DataFrame:
    rows = [{"model_id": model_id, "exit_head": name, **row}
            for name, fits in (("tuned", tuned), ("control", control)) for row in fit_report(fits)]
    return pl.DataFrame(rows).rename({"kl_tuned": "kl_fit"})


TUNED_VERSION_FIELDS = ("model_checksum", "dumps", "tuned_code_version")


def tuned_lens_problem(ws: Workspace, model_id: str, workloads: Sequence[WorkloadEntry],
                       settings: TunedLensSettings = TunedLensSettings()) -> str | None:
    """Why the stored tuned lens no longer matches its inputs (or is missing), or None."""
    path = fit_path(ws, model_id)
    if not (path.is_file() and translators_path(ws, model_id).is_file()):
        return "never fitted"
    missing = [w.workload_id for w in workloads if not ws.partition_path(TUNED_LENS, model_id, w.workload_id).is_file()]
    if missing:
        return f"no held-out stats for {', '.join(missing)}"
    meta = read_parquet_metadata(path)
    if meta.get("tuned_code_version") != tuned_code_version(settings):
        return "fitted by other code or settings"
    try:
        inputs = _inputs(ws, model_id, workloads)
    except MissingUpstreamError as exc:
        return str(exc)
    if meta.get("model_checksum") != inputs["model_checksum"]:
        return "fitted on another checkpoint"
    if meta.get("dumps") != inputs["dumps"]:
        return "fitted on other dumps (prompts, dtype or capture code)"
    return None


def tuned_publish_problem(ws: Workspace, model_id: str, checksum: str | None) -> str | None:
    """Why a stored tuned lens may not be published (the results stage's view: its
    checkpoint, code and prompts as they are now; the dumps themselves may be gone)."""
    meta = read_parquet_metadata(fit_path(ws, model_id))
    if checksum is None:
        return "the model's checkpoint is unavailable or not prepared"
    if meta.get("model_checksum") != checksum:
        return "fitted on another checkpoint"
    try:
        settings = TunedLensSettings(**(meta.get("settings") or {}))
    except TypeError:
        return "fitted with settings this code does not know"
    if meta.get("tuned_code_version") != tuned_code_version(settings):
        return "fitted by older code"
    for workload_id, dump in sorted((meta.get("dumps") or {}).items()):
        prompts = ws.prompts_path(workload_id)
        if not prompts.is_file() or read_parquet_metadata(prompts).get("checksum") != dump.get("prompts_checksum"):
            return f"fitted on other prompts of {workload_id}"
    return None


def tuned_lens_data_version(ws: Workspace, model_id: str) -> str:
    return data_version(read_parquet_metadata(fit_path(ws, model_id)), TUNED_VERSION_FIELDS)
