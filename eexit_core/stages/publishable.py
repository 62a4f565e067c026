"""Which stored partitions the results store may publish: those of the registry and the
selection whose provenance still matches their inputs. A partition left from an older
registry entry, checkpoint, prompt set or code, or kept after its rebuild failed, is not
published, and the reason is reported."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from eexit_core.evaluation.exit_accuracy import ExitSweepSettings
from eexit_core.registry import ModelRegistry, WorkloadEntry, WorkloadRegistry, computation_fields
from eexit_core.stages.common import (
    EXIT_ACCURACY,
    EXIT_ITEMS,
    LAYER_SIMILARITY,
    ORACLE_EXITS,
    SELF_SPECULATION_ITEMS,
    TOKEN_STATS,
    TUNED_LENS,
    data_version,
)
from eexit_core.stages.exit_accuracy import EXIT_VERSION_FIELDS, exit_code_version, plan_exit_accuracy
from eexit_core.stages.self_speculation import speculation_problem
from eexit_core.stages.token_stats import STATS_VERSION_FIELDS, stats_input_problem
from eexit_core.stages.tuned_lens import fit_path, tuned_publish_problem
from eexit_core.storage.artifacts import read_parquet_metadata
from eexit_core.storage.workspace import Workspace

Pair = tuple[str, str]  # (model_id, workload_id)


@dataclass
class Publishable:
    """The partitions to publish, by asset, and why the others of the selection are not."""

    model_ids: list[str]
    workload_ids: list[str]
    files: dict[str, list[Path]] = field(default_factory=dict)  # asset -> partition files
    excluded: list[str] = field(default_factory=list)  # "asset[model|workload]: reason"

    def paths(self, asset: str) -> list[Path]:
        return self.files.get(asset, [])


def publishable(ws: Workspace, models: ModelRegistry, workloads: WorkloadRegistry, *,
                model_ids: list[str] | None = None, workload_ids: list[str] | None = None) -> Publishable:
    """The stored partitions of the selected registry entries (every entry when no selection
    is given) whose inputs are unchanged since they were computed."""
    chosen_models = [m.model_id for m in models.models if model_ids is None or m.model_id in model_ids]
    chosen_workloads = [w for w in workloads.workloads if workload_ids is None or w.workload_id in workload_ids]
    result = Publishable(chosen_models, [w.workload_id for w in chosen_workloads])
    checksums = {m: _checkpoint_checksum(ws, m) for m in chosen_models}
    current_prompts = []
    for entry in chosen_workloads:
        problem = _prompts_problem(ws, entry)
        if problem is None:
            current_prompts.append(entry)
            result.files.setdefault("prompts", []).append(ws.prompts_path(entry.workload_id))
        elif ws.prompts_path(entry.workload_id).is_file():
            result.excluded.append(f"workload_prompts[{entry.workload_id}]: {problem}")
    for model_id in chosen_models:
        for entry in current_prompts:
            _add_measurements(ws, result, model_id, entry, checksums[model_id])
        _add_tuned_lens(ws, result, model_id, [w.workload_id for w in current_prompts], checksums[model_id])
    return result


def _add_tuned_lens(ws: Workspace, result: Publishable, model_id: str, workload_ids: list[str], checksum: str | None) -> None:
    """A model's tuned lens: its fit and the held-out stats of the selected workloads."""
    if not fit_path(ws, model_id).is_file():
        return
    problem = tuned_publish_problem(ws, model_id, checksum)
    if problem is not None:
        result.excluded.append(f"{TUNED_LENS}[{model_id}]: {problem}")
        return
    result.files.setdefault(f"{TUNED_LENS}_fit", []).append(fit_path(ws, model_id))
    for workload_id in workload_ids:
        path = ws.partition_path(TUNED_LENS, model_id, workload_id)
        if path.is_file():
            result.files.setdefault(TUNED_LENS, []).append(path)


def _add_measurements(ws: Workspace, result: Publishable, model_id: str, entry: WorkloadEntry, checksum: str | None) -> None:
    pair = (model_id, entry.workload_id)
    stats_path = ws.partition_path(TOKEN_STATS, *pair)
    if stats_path.is_file():
        problem = stats_input_problem(ws, read_parquet_metadata(stats_path), entry, checksum)
        if problem is not None:
            result.excluded.append(f"{TOKEN_STATS}[{model_id}|{entry.workload_id}]: {problem}")
        else:
            result.files.setdefault(TOKEN_STATS, []).append(stats_path)
            stats_version = data_version(read_parquet_metadata(stats_path), STATS_VERSION_FIELDS)
            for asset in (LAYER_SIMILARITY, ORACLE_EXITS):
                _add_derived(ws, result, asset, pair, stats_version)
    exit_path = ws.partition_path(EXIT_ACCURACY, *pair)
    if exit_path.is_file() and ws.partition_path(EXIT_ITEMS, *pair).is_file():
        problem = _exit_problem(ws, read_parquet_metadata(exit_path), model_id, entry, checksum)
        if problem is not None:
            result.excluded.append(f"{EXIT_ACCURACY}[{model_id}|{entry.workload_id}]: {problem}")
        else:
            result.files.setdefault(EXIT_ACCURACY, []).append(exit_path)
            result.files.setdefault(EXIT_ITEMS, []).append(ws.partition_path(EXIT_ITEMS, *pair))
    speculation_path = ws.partition_path(SELF_SPECULATION_ITEMS, *pair)
    if speculation_path.is_file():
        problem = ("the model's checkpoint is unavailable or not prepared" if checksum is None
                   else speculation_problem(ws, model_id, entry))
        if problem is not None:
            result.excluded.append(f"{SELF_SPECULATION_ITEMS}[{model_id}|{entry.workload_id}]: {problem}")
        else:
            result.files.setdefault(SELF_SPECULATION_ITEMS, []).append(speculation_path)


def _add_derived(ws: Workspace, result: Publishable, asset: str, pair: Pair, stats_version: str) -> None:
    """layer_similarity and oracle_exits carry the provenance of the stats they came from."""
    path = ws.partition_path(asset, *pair)
    if not path.is_file():
        return
    if data_version(read_parquet_metadata(path), STATS_VERSION_FIELDS) != stats_version:
        result.excluded.append(f"{asset}[{pair[0]}|{pair[1]}]: computed from other token stats than the stored ones")
        return
    result.files.setdefault(asset, []).append(path)


def _checkpoint_checksum(ws: Workspace, model_id: str) -> str | None:
    record = ws.checkpoint_record(model_id)
    if not record.is_file():
        return None
    content = json.loads(record.read_text())
    return content.get("checksum") if content.get("available") else None


def _prompts_problem(ws: Workspace, entry: WorkloadEntry) -> str | None:
    path = ws.prompts_path(entry.workload_id)
    if not path.is_file():
        return "no prompts"
    record = ws.prompts_record(entry.workload_id)
    if record.is_file() and json.loads(record.read_text()).get("available") is False:
        return "its source was unavailable at the last build; the stored prompts are older"
    if computation_fields(read_parquet_metadata(path).get("entry")) != entry.measured_fields():
        return f"drawn under another registry entry than the current one in {ws.workloads_registry.name} (rebuild them)"
    return None


def _exit_problem(ws: Workspace, meta: dict, model_id: str, entry: WorkloadEntry, checksum: str | None) -> str | None:
    if checksum is None:
        return "the model's checkpoint is unavailable or not prepared"
    if meta.get("model_checksum") != checksum:
        return "computed from another checkpoint (its weights changed)"
    if meta.get("exit_code_version") != exit_code_version(entry.grader):
        return "computed by older exit-accuracy code"
    try:  # the items the stored sweep would draw now
        sweep = ExitSweepSettings(**json.loads(meta.get("settings") or "{}"))
        plan = plan_exit_accuracy(ws, model_id, entry, sweep)
    except (TypeError, ValueError, FileNotFoundError) as exc:
        return f"its items cannot be drawn again ({exc})"
    if any(meta.get(k) != plan.meta[k] for k in EXIT_VERSION_FIELDS):
        return "computed on other graded items"
    return None
