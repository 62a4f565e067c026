"""workload_prompts [w]: a workload's prompts drawn from its packaged source."""

from __future__ import annotations

import polars as pl

from eexit_core.registry import WorkloadEntry
from eexit_core.storage.artifacts import availability_recorded, read_parquet_metadata, sha256_text, write_json, write_parquet
from eexit_core.storage.provenance import code_version
from eexit_core.storage.workspace import Workspace


def build_workload_prompts(ws: Workspace, entry: WorkloadEntry, n_prompts: int | None = None) -> pl.DataFrame:
    """Draw the workload's prompts from its packaged source and store them; a source that is
    not installed is recorded (with the command that installs it) and re-raised."""
    from eexit_core.workloads.prompts import SourceUnavailableError, load_prompts

    record = ws.prompts_record(entry.workload_id)
    with availability_recorded(record, {"workload_id": entry.workload_id}, SourceUnavailableError):
        prompts = load_prompts(entry, sdist_dir=ws.sdist_dir, cache_dir=ws.cache_dir / "workloads", n_prompts=n_prompts,
                               data_root=ws.root)
    if prompts.is_empty():
        raise ValueError(f"workload {entry.workload_id!r} produced no prompts; check its source in {ws.workloads_registry}")
    checksum = sha256_text(*prompts["text"].to_list())
    write_parquet(
        prompts,
        ws.prompts_path(entry.workload_id),
        metadata={"workload_id": entry.workload_id, "seed": entry.seed, "checksum": checksum,
                  "entry": entry.model_dump(mode="json"), "code_version": code_version()},
    )
    write_json({"workload_id": entry.workload_id, "available": True, "checksum": checksum}, record)
    return prompts


def prompts_data_version(ws: Workspace, workload_id: str) -> str:
    """The prompts' Dagster data version: their checksum and the registry entry they were
    drawn under, since fields that leave the text alone (max_tokens, grader, chat_template)
    still change what the downstream stages compute; its labels (description, domain) do not."""
    import json

    from eexit_core.registry import computation_fields

    meta = read_parquet_metadata(ws.prompts_path(workload_id))
    return sha256_text(meta["checksum"], json.dumps(computation_fields(meta.get("entry")), sort_keys=True))[:16]
