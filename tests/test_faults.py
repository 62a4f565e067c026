"""Faults a real workspace meets, injected into copies of one finished tiny run: nothing
stale is published. A partition whose inputs changed after it was computed (a registry
entry, a checkpoint, the code), or whose rebuild failed and left the old file, is left out
of the results store and named; a subset run and a deregistered model publish only the
selected, registered models.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import duckdb
import polars as pl
import pytest

from eexit_core.stages import registries
from eexit_core.stages.publishable import publishable
from eexit_core.storage.artifacts import read_parquet_metadata, write_parquet
from eexit_core.storage.workspace import Workspace
from tests.conftest import REPO
from tests.tiny_run import run_pipeline

MEASURED = ("token_layer_stats", "layer_similarity", "oracle_exits", "exit_accuracy", "exit_items")


@pytest.fixture
def finished_run(tiny_run) -> Path:
    """The session's finished tiny run (conftest), the uninterrupted run to compare with."""
    return tiny_run.root


@pytest.fixture
def workspace(tiny_run_copy) -> Path:
    """A copy of the finished run to break (its Dagster history included)."""
    return tiny_run_copy


def _published(root: Path):
    ws = Workspace(root)
    models, workloads = registries(ws)
    return publishable(ws, models, workloads, model_ids=["tiny-llama", "hub-only"])


def _partitions(result, asset: str) -> list[str]:
    return sorted(p.stem for p in result.paths(asset))


def _edit_registry(root: Path, workload_id: str, old: str, new: str) -> None:
    path = root / "data" / "registry" / "workloads.yaml"
    text = path.read_text()
    start = text.index(f"workload_id: {workload_id}")
    path.write_text(text[:start] + text[start:].replace(old, new, 1))


def test_an_untouched_run_publishes_every_partition(workspace):
    """Also after a label edit: a workload's description and domain change nothing measured."""
    _edit_registry(workspace, "shakespeare", "description: Shakespeare", "description: The Tempest, opening")
    result = _published(workspace)
    assert result.excluded == []
    for asset in ("token_layer_stats", "layer_similarity", "oracle_exits"):
        assert _partitions(result, asset) == ["tiny-llama__humaneval", "tiny-llama__shakespeare"], asset
    assert _partitions(result, "exit_accuracy") == ["tiny-llama__humaneval"]


def test_prompts_of_an_older_registry_entry_are_not_published(workspace):
    """The entry changed and its prompts were not rebuilt (the rebuild failed, or was not
    run): the old prompts and everything measured on them stay out, with the reason."""
    _edit_registry(workspace, "shakespeare", "max_tokens: 24", "max_tokens: 24\n    seed: 7")
    result = _published(workspace)
    assert any(line.startswith("workload_prompts[shakespeare]: drawn under another registry entry") for line in result.excluded)
    for asset in ("prompts", *MEASURED):
        assert not [p for p in _partitions(result, asset) if "shakespeare" in p], asset
    assert _partitions(result, "token_layer_stats") == ["tiny-llama__humaneval"]


def test_measurements_of_another_checkpoint_are_not_published(workspace):
    """The weights changed (a new checksum was recorded) but the stats and exits were not
    recomputed: none of them is current."""
    record = workspace / "data" / "artifacts" / "checkpoints" / "tiny-llama.json"
    content = json.loads(record.read_text())
    record.write_text(json.dumps({**content, "checksum": "0" * 64}))
    result = _published(workspace)
    for asset in MEASURED:
        assert result.paths(asset) == [], asset
    assert sum("computed from another checkpoint" in line for line in result.excluded) == 3  # 2 stats + 1 exits


def test_similarity_from_other_stats_is_not_published(workspace):
    """A layer_similarity file left from earlier stats (its rebuild failed after the stats
    were recomputed) does not match the stats' provenance."""
    path = workspace / "data" / "artifacts" / "layer_similarity" / "tiny-llama__humaneval.parquet"
    meta = read_parquet_metadata(path)
    write_parquet(pl.read_parquet(path), path, metadata={**meta, "lens_version": "older"})
    result = _published(workspace)
    assert result.excluded == ["layer_similarity[tiny-llama|humaneval]: computed from other token stats than the stored ones"]
    assert _partitions(result, "layer_similarity") == ["tiny-llama__shakespeare"]
    assert _partitions(result, "token_layer_stats") == ["tiny-llama__humaneval", "tiny-llama__shakespeare"]


def test_stats_of_another_token_cap_are_not_published(workspace):
    """Stats computed with another max_tokens than the registry's (the prompts are current)."""
    path = workspace / "data" / "artifacts" / "token_layer_stats" / "tiny-llama__shakespeare.parquet"
    meta = read_parquet_metadata(path)
    write_parquet(pl.read_parquet(path), path, metadata={**meta, "max_tokens": 999})
    result = _published(workspace)
    assert result.excluded == ["token_layer_stats[tiny-llama|shakespeare]: computed with max_tokens 999, the registry now says 24"]


def test_the_results_stage_leaves_stale_partitions_out_and_says_so(workspace):
    _edit_registry(workspace, "shakespeare", "max_tokens: 24", "max_tokens: 24\n    seed: 7")
    result = run_pipeline(workspace, "--stage", "results")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "not published: workload_prompts[shakespeare]: drawn under another registry entry" in result.stdout
    db = workspace / "data" / "results.duckdb"
    with duckdb.connect(str(db), read_only=True) as con:
        workloads = {row[0] for row in con.sql("select distinct workload_id from eas_scores").fetchall()}
        assert workloads == {"humaneval", "ALL"}
        assert con.sql("select count(*) from prompts where workload_id = 'shakespeare'").fetchone()[0] == 0
    _assert_view_models(workspace, {("tiny-llama", "humaneval")})


def test_a_subset_run_and_a_deregistered_model_publish_only_the_selected_registered_models(workspace):
    registry = workspace / "data" / "registry" / "models.yaml"
    text = registry.read_text()
    first = text[text.index("  - model_id: tiny-llama"):text.index("  - model_id: hub-only")]
    registry.write_text(text + first.replace("model_id: tiny-llama", "model_id: tiny-twin")
                        .replace("display_name: tiny random Llama", "display_name: its twin"))
    # the twin on the ungraded workload only: measuring it is what matters, not its exits
    both = run_pipeline(workspace, EEXIT_MODELS="tiny-llama,tiny-twin", EEXIT_WORKLOADS="shakespeare")
    assert both.returncode == 0, both.stderr[-3000:]
    assert _eas_models(workspace) == {"tiny-llama", "tiny-twin"}
    subset = run_pipeline(workspace, "--stage", "results", EEXIT_MODELS="tiny-twin")
    assert subset.returncode == 0, subset.stderr[-3000:]
    assert _eas_models(workspace) == {"tiny-twin"}
    assert "tiny-llama" not in subset.stdout.split("EAS at α = 0.5")[1]
    registry.write_text(text)  # tiny-twin deregistered; its files are still on disk
    alone = run_pipeline(workspace, "--stage", "results", EEXIT_MODELS="tiny-llama")
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert _eas_models(workspace) == {"tiny-llama"}
    _assert_view_models(workspace, {("tiny-llama", "humaneval"), ("tiny-llama", "shakespeare")})


def _eas_models(root: Path) -> set[str]:
    with duckdb.connect(str(root / "data" / "results.duckdb"), read_only=True) as con:
        return {row[0] for row in con.sql("select distinct model_id from eas_scores").fetchall()}


def _assert_view_models(root: Path, expected: set[tuple[str, str]]) -> None:
    import os

    here = Path.cwd()
    os.chdir(root)  # the view's paths are relative to the project root
    try:
        with duckdb.connect(str(root / "data" / "results.duckdb"), read_only=True) as con:
            pairs = set(con.sql("select distinct model_id, workload_id from token_layer_stats").fetchall())
    finally:
        os.chdir(here)
    assert pairs == expected


# --- kill -9 mid-stage, then rerun ------------------------------------------------------

_TIMING = ("seconds", "ms_per_token")  # wall-clock columns: a recomputed partition differs there only


def _comparable_store(root: Path) -> dict[str, pl.DataFrame]:
    from eexit_core.storage import store
    from eexit_core.storage.store import TABLE_KEYS

    db = root / "data" / "results.duckdb"
    tables = {}
    for name in TABLE_KEYS:
        frame = store.read_table(db, name)
        timing = [c for c in frame.columns if any(t in c for t in _TIMING) or "realised" in c]
        tables[name] = frame.drop(timing).sort(TABLE_KEYS[name])
    return tables


def _unreadable_files(root: Path) -> list[str]:
    """Parquet files that do not open (torn) and temporaries left behind."""
    import pyarrow.parquet as pq

    bad = [str(p) for p in (root / "data").rglob("*") if p.name.endswith((".tmp", ".old"))]
    for path in (root / "data" / "artifacts").rglob("*.parquet"):
        try:
            pq.read_metadata(path)
        except Exception:  # noqa: BLE001  (any failure to open is a torn file)
            bad.append(str(path))
    return bad


# (the stage, the write at which the runner dies, the artifacts removed first so the stage
# has work to do); partitions run in registry order: humaneval, then shakespeare
KILL_POINTS = [
    ("prompts", "prompts/shakespeare.parquet", ["prompts/*.parquet"]),
    ("stats", "token_layer_stats/tiny-llama__shakespeare.parquet", ["token_layer_stats/*.parquet"]),
    ("exits", "exit_accuracy/tiny-llama__humaneval.parquet", ["exit_accuracy/*.parquet", "exit_items/*.parquet"]),
    ("results", "results.duckdb", []),
]


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "kill_at", "removed"), KILL_POINTS, ids=[k[0] for k in KILL_POINTS])
def test_a_kill_mid_write_then_a_rerun_equals_an_uninterrupted_run(finished_run, workspace, stage, kill_at, removed):
    """The runner dies (SIGKILL) with the write's data on disk, uncommitted: nothing is torn,
    the store still opens with its old tables, and a rerun finishes with the tables of the
    uninterrupted run (timings aside), redoing no partition that had been completed."""
    import signal

    for pattern in removed:
        for path in (workspace / "data" / "artifacts").glob(pattern):
            path.unlink()
    killed = run_pipeline(workspace, "--stage", stage, EEXIT_KILL_AT=kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-2000:]
    left = _unreadable_files(workspace)
    assert left and all(p.endswith(".tmp") for p in left) if stage != "results" else left == []
    with duckdb.connect(str(workspace / "data" / "results.duckdb"), read_only=True) as con:
        assert con.sql("select count(*) from eas_scores").fetchone()[0] > 0  # the old store, whole
    survivors = {p: p.stat().st_mtime_ns for p in (workspace / "data" / "artifacts").rglob("*.parquet")}
    rerun = run_pipeline(workspace)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert _unreadable_files(workspace) == []
    expected, actual = _comparable_store(finished_run), _comparable_store(workspace)
    assert [name for name, frame in expected.items() if not actual[name].equals(frame)] == []
    redone = [p.name for p, mtime in survivors.items()
              if p.parent.name in ("token_layer_stats", "exit_accuracy") and p.stat().st_mtime_ns != mtime]
    assert redone == []
    if stage == "stats":  # the partition finished before the kill was kept
        assert "tiny-llama × humaneval (stats fresh)" in rerun.stdout, rerun.stdout


_BUILD_CHECKPOINT = """
import sys
from pathlib import Path
from eexit_core.registry import ModelEntry
from eexit_core.stages.checkpoint import build_model_checkpoint
from eexit_core.storage.workspace import Workspace
build_model_checkpoint(Workspace(Path(sys.argv[1])), ModelEntry.model_validate_json(sys.argv[2]))
"""


def _tiny_gguf_model(tmp_path: Path, *, in_parts: bool):
    from eexit_core.registry import GgufFileSource, load_model_registry
    from eexit_core.storage.artifacts import sha256_file
    from tests.conftest import REPO, TINY_GGUF_FACTS, write_tiny_llama_gguf

    gguf = write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    locator = {"path": str(gguf)}
    if in_parts:
        data = gguf.read_bytes()
        parts = [tmp_path / "tiny.gguf.part1", tmp_path / "tiny.gguf.part2"]
        parts[0].write_bytes(data[:1000])
        parts[1].write_bytes(data[1000:])
        locator = {"parts": [str(p) for p in parts]}
    source = GgufFileSource(kind="gguf_file", sha256=sha256_file(gguf), quantization="F32", **locator)
    entry = load_model_registry(REPO / "data" / "registry" / "models.yaml").get("llama-2-7b")
    return entry.model_copy(update={"model_id": "tiny-gguf", "source": source, **TINY_GGUF_FACTS})


@pytest.mark.parametrize(("in_parts", "kill_at"), [(False, "models/tiny-gguf"), (True, "gguf/tiny-gguf.gguf")],
                         ids=["conversion", "joining parts"])
def test_a_kill_mid_checkpoint_then_a_rerun_converts_the_same_model(tmp_path, in_parts, kill_at):
    """Killed after the converted (or joined) file is written and before it is committed:
    no model folder is published, the next run's start removes the temporaries, and the
    rerun's model is file for file the one an uninterrupted conversion makes."""
    import signal
    import subprocess
    import sys

    from eexit_core.stages.checkpoint import build_model_checkpoint
    from eexit_core.storage.workspace import Workspace
    from pipelines.run import _clean_up_after_a_kill

    entry = _tiny_gguf_model(tmp_path, in_parts=in_parts)
    ws = Workspace(tmp_path / "ws")
    env = {**os.environ, "EEXIT_KILL_AT": kill_at}
    killed = subprocess.run([sys.executable, "-c", _BUILD_CHECKPOINT, str(ws.root), entry.model_dump_json()],
                            env=env, capture_output=True, text=True, cwd=REPO)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (ws.models_dir / "tiny-gguf").exists() and not (ws.gguf_cache_dir / "tiny-gguf.gguf").exists()
    assert _unreadable_files(ws.root), "the kill left no temporary: it did not happen mid-write"
    _clean_up_after_a_kill(ws)
    assert _unreadable_files(ws.root) == []
    rerun = build_model_checkpoint(ws, entry)
    uninterrupted = build_model_checkpoint(Workspace(tmp_path / "uninterrupted"), entry)
    manifest = json.loads((rerun.path / "eexit_checkpoint.json").read_text())
    assert manifest == json.loads((uninterrupted.path / "eexit_checkpoint.json").read_text())
    assert manifest["files"] and rerun.checksum == uninterrupted.checksum


# --- freshness: stored provenance against the current inputs and settings ---------------

@pytest.mark.parametrize(("field", "value"), [
    ("lens_version", "older"), ("lens_engine", "kernel"), ("model_checksum", "0" * 64), ("workload_checksum", "other"),
    ("top_k", 3), ("stats", ["logit_cos"]), ("max_tokens", 999),
])
def test_stored_stats_are_fresh_only_for_their_exact_provenance(workspace, field, value):
    from eexit_core.stages import LensSettings, token_stats_fresh

    ws = Workspace(workspace)
    humaneval = registries(ws)[1].get("humaneval")
    assert token_stats_fresh(ws, "tiny-llama", humaneval, LensSettings())
    path = ws.partition_path("token_layer_stats", "tiny-llama", "humaneval")
    write_parquet(pl.read_parquet(path), path, metadata={**read_parquet_metadata(path), field: value})
    assert not token_stats_fresh(ws, "tiny-llama", humaneval, LensSettings())


@pytest.mark.parametrize("field", ["exit_code_version", "model_checksum", "workload_checksum", "settings"])
def test_stored_exit_accuracy_is_fresh_only_for_its_exact_provenance(workspace, field):
    from eexit_core.evaluation.exit_accuracy import ExitSweepSettings
    from eexit_core.stages import exit_accuracy_fresh

    ws = Workspace(workspace)
    humaneval = registries(ws)[1].get("humaneval")
    assert exit_accuracy_fresh(ws, "tiny-llama", humaneval, ExitSweepSettings())
    assert not exit_accuracy_fresh(ws, "tiny-llama", humaneval, ExitSweepSettings(n_items_generate=2))  # another sweep
    path = ws.partition_path("exit_accuracy", "tiny-llama", "humaneval")
    write_parquet(pl.read_parquet(path), path, metadata={**read_parquet_metadata(path), field: "changed"})
    assert not exit_accuracy_fresh(ws, "tiny-llama", humaneval, ExitSweepSettings())
