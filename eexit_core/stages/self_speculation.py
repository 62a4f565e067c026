"""self_speculation_items [m × decoded w]: lossless self-speculation measured, and its freshness.

Runs on the workloads a model decodes open-ended (`decoded_workload`): code and math with
a generative grader (decoding from the prompts exit accuracy decodes from) and ungraded
instruction workloads (from the user turn, chat-templated where the workload asks for it).
The partition stores the raw items only; the results stage summarises them into
`self_speculation` beside the lens's prediction from `layer_similarity`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from eexit_core.evaluation.grading import GradedItem
from eexit_core.evaluation.speculation_sweep import SpeculationSettings
from eexit_core.registry import ModelEntry, WorkloadEntry
from eexit_core.stages.common import SELF_SPECULATION_ITEMS, _require, data_version, log
from eexit_core.stages.token_stats import _provenance_columns
from eexit_core.storage.artifacts import read_parquet_metadata, sha256_text, write_parquet
from eexit_core.storage.provenance import code_version
from eexit_core.storage.workspace import Workspace

# arch classes whose recurrent state cannot be cropped back after a rejected draft
UNSERVED_ARCH_CLASSES = ("ssm", "hybrid")


def decoded_workload(workload: WorkloadEntry) -> bool:
    """A workload the model decodes open-ended: a generative grader's, or an ungraded
    instruction workload (multiple-choice workloads score choices; prose is teacher-forced)."""
    from eexit_core.evaluation.grading import grader

    if workload.graded:
        return grader(workload.grader).generative
    return workload.domain == "instruction"


def served_model(model: ModelEntry) -> bool:
    """Self-speculation crops its cache back to the accepted tokens: attention-only models."""
    return model.arch_class not in UNSERVED_ARCH_CLASSES


def speculation_code_modules(grader_name: str | None = None) -> list[Path]:
    """The code behind the stored items (with every grader's prompts, without a name)."""
    from eexit_core.analysis import speculation
    from eexit_core.decoding import early_exit, self_speculation
    from eexit_core.evaluation import exit_accuracy, grading, speculation_sweep
    from eexit_core.models import adapters, checkpoints

    modules = (adapters, checkpoints, early_exit, self_speculation, speculation, speculation_sweep, exit_accuracy, grading)
    graders = grading.grader_modules(grader_name) if grader_name != "none" else []
    return [Path(m.__file__) for m in modules] + graders


def speculation_code_version(grader_name: str | None = None) -> str:
    return sha256_text(*(path.read_text() for path in speculation_code_modules(grader_name)))[:16]


def speculation_asset_code_version(settings: SpeculationSettings = SpeculationSettings()) -> str:
    """The Dagster code version of `self_speculation_items`: its code and the sweep's settings."""
    return sha256_text(speculation_code_version(), settings.to_json())[:16]


@dataclass(frozen=True)
class SpeculationPlan:
    """The prompts of one partition and the provenance items made from them carry."""

    prompts: pl.DataFrame
    meta: dict


def plan_self_speculation(ws: Workspace, model_id: str, workload: WorkloadEntry, settings: SpeculationSettings) -> SpeculationPlan:
    from eexit_core.evaluation.grading import grader
    from eexit_core.workloads.prompts import load_prompts

    if not decoded_workload(workload):
        raise ValueError(f"workload {workload.workload_id!r} is not decoded open-ended; self-speculation needs a code, "
                         "math or instruction workload")
    exemplars = grader(workload.grader).exemplars if workload.graded else 0
    n_prompts = None if settings.n_prompts is None else settings.n_prompts + exemplars
    prompts = load_prompts(workload, sdist_dir=ws.sdist_dir, cache_dir=ws.cache_dir / "workloads", n_prompts=n_prompts,
                           data_root=ws.root)
    checksum = sha256_text(*(f"{r['prompt_id']}\x00{r['text']}\x00{r['user']}" for r in prompts.iter_rows(named=True)))
    record = json.loads(_require(ws.checkpoint_record(model_id), "model_checkpoints", model_id).read_text())
    meta = {
        "partition": f"{model_id}|{workload.workload_id}",
        "speculation_code_version": speculation_code_version(workload.grader),
        "model_checksum": record.get("checksum"),
        "workload_checksum": checksum,
        "seed": workload.seed,
        "over_context": workload.over_context,
        "chat_template": workload.chat_template,
        "settings": settings.to_json(),
        "code_version": code_version(),
    }
    return SpeculationPlan(prompts, meta)


# the stored fields that decide a partition's content (its Dagster data version)
SPECULATION_VERSION_FIELDS = ("speculation_code_version", "model_checksum", "workload_checksum", "settings", "over_context",
                              "chat_template")


def self_speculation_data_version(ws: Workspace, model_id: str, workload_id: str) -> str:
    return data_version(read_parquet_metadata(ws.partition_path(SELF_SPECULATION_ITEMS, model_id, workload_id)),
                        SPECULATION_VERSION_FIELDS)


def self_speculation_fresh(ws: Workspace, model_id: str, workload: WorkloadEntry, settings: SpeculationSettings,
                           plan: SpeculationPlan | None = None) -> bool:
    """True when the stored items came from the current checkpoint, prompts, code and settings."""
    return speculation_problem(ws, model_id, workload, settings, plan) is None


def speculation_problem(ws: Workspace, model_id: str, workload: WorkloadEntry, settings: SpeculationSettings | None = None,
                        plan: SpeculationPlan | None = None) -> str | None:
    """Why the stored items of a partition are not current (None: they are). Without
    `settings`, those the items were measured with (what the results stage publishes)."""
    path = ws.partition_path(SELF_SPECULATION_ITEMS, model_id, workload.workload_id)
    if not path.is_file():
        return "not measured"
    stored = read_parquet_metadata(path)
    try:
        settings = settings or SpeculationSettings.from_json(stored.get("settings") or "{}")
        plan = plan or plan_self_speculation(ws, model_id, workload, settings)
    except (TypeError, ValueError, FileNotFoundError) as exc:
        return f"its prompts cannot be drawn again ({exc})"
    if stored.get("model_checksum") != plan.meta["model_checksum"]:
        return "computed from another checkpoint (its weights changed)"
    if stored.get("speculation_code_version") != plan.meta["speculation_code_version"]:
        return "computed by older self-speculation code"
    if any(stored.get(k) != plan.meta[k] for k in SPECULATION_VERSION_FIELDS):
        return "computed on other prompts or settings"
    return None


def speculation_inputs(prompts: pl.DataFrame, workload: WorkloadEntry, tokenizer) -> list[GradedItem]:
    """What the model decodes from: a graded workload's items (its worked examples in the
    prompt, as exit accuracy decodes them), else each user turn, chat-templated where the
    workload asks for it and the tokenizer has a template."""
    from eexit_core.evaluation.grading import graded_items

    if workload.graded:
        return graded_items(prompts, workload.grader)
    templated = workload.chat_template and bool(getattr(tokenizer, "chat_template", None))
    items = []
    for row in prompts.iter_rows(named=True):
        user = row["user"] if row["user"] is not None else row["text"]
        text = (tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True)
                if templated else user)
        items.append(GradedItem(row["prompt_id"], workload.grader, text, ""))
    return items


def build_self_speculation(ws: Workspace, model: ModelEntry, workload: WorkloadEntry,
                           settings: SpeculationSettings = SpeculationSettings(), device: str = "cpu",
                           progress=None, plan: SpeculationPlan | None = None) -> pl.DataFrame:
    """Greedy decoding and self-speculation at each (l, k) on the partition's prompts: the
    `self_speculation_items` rows, written atomically with their provenance."""
    from eexit_core.decoding.self_speculation import SpeculationUnsupportedError
    from eexit_core.evaluation.exit_accuracy import fit_to_context
    from eexit_core.evaluation.speculation_sweep import measure_speculation
    from eexit_core.lens.engine import model_context_length
    from eexit_core.models.checkpoints import load_model
    from eexit_core.stages.checkpoint import read_checkpoint

    if not served_model(model):
        raise SpeculationUnsupportedError(f"{model.model_id} is a {model.arch_class} model: its recurrent state cannot be "
                                          "cropped back after a rejected draft; self-speculation serves attention-only models")
    plan = plan or plan_self_speculation(ws, model.model_id, workload, settings)
    progress = progress or log.info
    lm, tokenizer = load_model(read_checkpoint(ws, model.model_id), device=device)
    inputs = speculation_inputs(plan.prompts, workload, tokenizer)
    fitted = fit_to_context(inputs, tokenizer, model_context_length(lm), workload.over_context, settings.max_new_tokens)
    meta = {**plan.meta, "over_context_prompt_ids": fitted.over_context}
    if fitted.over_context:
        done = "cut from the left" if workload.over_context == "truncate_left" else "left out"
        progress(f"{len(fitted.over_context)} prompt(s) longer than the context {done}: {', '.join(fitted.over_context[:3])}")
    items = measure_speculation(lm, tokenizer, [(i.prompt_id, i.prompt) for i in fitted.items], settings, progress)
    items = items.with_columns(
        pl.lit(model.model_id).alias("model_id"), pl.lit(workload.workload_id).alias("workload_id"),
        *_provenance_columns(meta),
    ).select("model_id", "workload_id", pl.exclude("model_id", "workload_id"))
    write_parquet(items, ws.partition_path(SELF_SPECULATION_ITEMS, model.model_id, workload.workload_id), metadata=meta)
    return items
