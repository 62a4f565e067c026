"""Materialise the DAG on the selected models × workloads, then print the EAS table.

    python -m pipelines.run                    # everything (what `make run` calls)
    python -m pipelines.run --stage stats      # one stage (what each `dvc.yaml` stage calls)
    python -m pipelines.run --force            # recompute token stats even where fresh
    python -m pipelines.run --zoo              # train the zoo, then measure its checkpoints
    python -m pipelines.run --stage speculation  # lossless self-speculation, then the results
    python -m pipelines.run --stage tuned      # activation dumps, the tuned lens per model, then the results

Stages: prompts (workload_prompts), checkpoints (model_checkpoints), activations
(layer_activations: only with EEXIT_ACTIVATION_DUMPS set to a dtype; the stats are then read
from the dumps), stats (token_layer_stats), exits (exit_accuracy, graded workloads only), results
(layer_similarity, oracle_exits, eas_scores, factor_report). Lossless self-speculation
(self_speculation_items, on the code, math and instruction workloads) runs only when its
stage is named: on a 2-core CPU it takes longer than `make run`'s budget allows; so does the tuned
lens (tuned_lens, a learned exit head per model fitted from the activation dumps, which that
stage makes first in float32 unless EEXIT_ACTIVATION_DUMPS names another dtype). The zoo (group `zoo`: its
corpus, each variant trained, and the registry of its checkpoints) runs only when asked:
`--zoo` trains it (the scale EEXIT_ZOO names, `cpu` by default) and then runs the stages
above on its checkpoints and the zoo workloads; `EEXIT_ZOO=cpu python -m pipelines.run`
measures a zoo trained earlier (exit accuracy is left out: the zoo's models are tiny).

Each partition runs as a Dagster run in the instance under $DAGSTER_HOME (default
`.dagster/`), so `dagster dev` shows the history. A failing partition (an unavailable
model, a bad prompt) is reported and skipped; the rest complete. Token stats and exit
accuracy run only where Dagster marks the partition stale or missing (the status the UI
shows: a new code version, or an upstream checkpoint or prompts with a new data version)
or where the stored artifact's provenance does not match the current settings, so a rerun
after an interruption finishes only what is missing. A partition Dagster has never seen
(a new instance over DVC-pulled artifacts) runs, and the asset keeps a stored artifact
whose provenance is current instead of recomputing it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from eexit_core.storage.workspace import Workspace

STAGES = ("prompts", "checkpoints", "activations", "stats", "exits", "results")
# run only when named (then published by the results stage): lossless self-speculation
# does not fit `make run`'s 15 minutes on a 2-core CPU beside the stages above (issue 16)
SPECULATION = "speculation"
TUNED = "tuned"  # the same for the tuned lens (issue 25)
# Dagster's console logger would print each failure's traceback twice (step and run);
# the runner prints one line per failure and keeps the traceback in a file it names.
_QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
# assets whose Config has `force`
_FORCEABLE = ("layer_activations", "token_layer_stats", "exit_accuracy", "self_speculation_items", "tuned_lens")


def _results_store_keys() -> list[str]:
    """eas_scores and the store tables it publishes: one multi-asset, materialised together."""
    from assets.eas_scores import STORE_TABLES

    return ["eas_scores", *(f"results_store/{table}" for table in STORE_TABLES if table != "eas_scores")]


def _instance(ws: Workspace):
    import dagster as dg

    home = Path(os.environ.setdefault("DAGSTER_HOME", str(ws.root / ".dagster")))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")
    return dg.DagsterInstance.get()


def _first_error(result):
    """The first failure's error (Dagster's serialisable error info), or None."""
    for event in result.all_events:
        error = getattr(event.event_specific_data, "error", None) if event.is_failure else None
        if error is not None:
            return error
    return None


def _describe_failure(result, log_dir: Path) -> str:
    """One line: our error under Dagster's wrappers (an EexitError names what to fix; its
    own cause is detail), and the file that keeps the whole traceback."""
    error = _first_error(result)
    if error is None:
        return f"failed (see run {result.run_id} in the Dagster UI)"
    cause = error
    while cause.cause is not None and (cause.cls_name or "").startswith("Dagster"):
        cause = cause.cause
    message = cause.message.strip().splitlines()[-1] if cause.message.strip() else cause.cls_name
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{result.run_id}.txt"
    log.write_text(error.to_string())
    return f"{message} (traceback: {_shown(log)})"


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class Runner:
    """Launches one in-process Dagster run per partition and keeps a tally."""

    def __init__(self, ws: Workspace):
        import dagster as dg

        from assets import ASSET_MODULES
        from pipelines import definitions

        self.ws = ws
        self.instance = _instance(ws)
        self.assets = [*dg.load_assets_from_modules(ASSET_MODULES), *dg.load_asset_checks_from_modules(ASSET_MODULES)]
        self.defs = definitions.defs
        self.resources = definitions.defs.resources
        self.failure_logs = Path(os.environ["DAGSTER_HOME"]) / "failures"  # one traceback per failed run
        self.unavailable: list[str] = []  # sources that are not on this machine: skipped, said, not failures
        self.failed: list[str] = []

    def run(self, selection: list[str], partition_key: str | None, label: str, *, force: bool = False,
            availability_record: Path | None = None) -> bool:
        """One Dagster run; `force` sets the Config field of the selected assets that have one.
        A failure is an unavailable source, not a failure, when the run itself recorded the
        source as unavailable in `availability_record` (a model or data package missing here)."""
        import dagster as dg

        started = time.time()
        forced = {"ops": {asset: {"config": {"force": True}} for asset in selection if asset in _FORCEABLE}} if force else {}
        result = dg.materialize(
            self.assets, selection=selection, partition_key=partition_key, instance=self.instance,
            resources=self.resources, raise_on_error=False, run_config={**_QUIET, **forced}, tags=_runner_tags(),
        )
        unavailable = not result.success and _recorded_unavailable(availability_record, since=started)
        status = "ok" if result.success else "unavailable" if unavailable else "FAILED"
        print(f"  {label:<58} {status:>6} {time.time() - started:7.1f}s", flush=True)
        if not result.success:
            (self.unavailable if unavailable else self.failed).append(f"{label}: {_describe_failure(result, self.failure_logs)}")
        return result.success

    def staleness(self):
        """Dagster's stale status of every partition, as of now."""
        from pipelines.staleness import Staleness

        return Staleness(self.instance, self.defs)


def _recorded_unavailable(record: Path | None, *, since: float) -> bool:
    """The record says unavailable and was written by this run (not left from an earlier one)."""
    if record is None or not record.is_file() or record.stat().st_mtime < since - 1:
        return False
    return json.loads(record.read_text()).get("available") is False


def _available_models(ws: Workspace, model_ids: list[str]) -> list[str]:
    available = []
    for model_id in model_ids:
        record = ws.checkpoint_record(model_id)
        if record.is_file() and json.loads(record.read_text()).get("available"):
            available.append(model_id)
    return available


def _workload_available(ws: Workspace, workload_id: str) -> bool:
    """Prompts exist and were built from a source that was there (not a stale file left
    from before its package went missing)."""
    record = ws.prompts_record(workload_id)
    available = json.loads(record.read_text()).get("available", True) if record.is_file() else True
    return available and ws.prompts_path(workload_id).is_file()


RUNNER_PID_TAG, RUNNER_HOST_TAG = "eexit/runner_pid", "eexit/runner_host"


def _runner_tags() -> dict[str, str]:
    """Which runner process launched a run: what tells an abandoned run from a live one."""
    import socket

    return {RUNNER_PID_TAG: str(os.getpid()), RUNNER_HOST_TAG: socket.gethostname()}


def fail_abandoned_runs(instance) -> list[str]:
    """Mark failed the runs a killed runner on this machine left unfinished (Dagster would
    show them STARTED for ever); runs of a live runner, of another machine, or launched
    from the UI or Dagster's CLI are left alone. Returns their run ids."""
    import socket

    import dagster as dg

    unfinished = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
    abandoned = []
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=unfinished, tags={RUNNER_HOST_TAG: socket.gethostname()}))
    for run in runs:
        pid = int(run.tags.get(RUNNER_PID_TAG, "0"))
        if pid and not _alive(pid):
            instance.report_run_failed(run, message=f"the runner (pid {pid}) was killed before this run finished")
            abandoned.append(run.run_id)
    return abandoned


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_up_after_a_kill(ws: Workspace) -> None:
    """Remove what an interrupted run's atomic writes left behind (hidden `.tmp` / `.old`
    files and folders): nothing of ours writes before the runner starts its first run."""
    from eexit_core.storage.artifacts import remove_stale_temporaries

    removed = [p for folder in ws.atomically_written_dirs for p in remove_stale_temporaries(folder)]
    if removed:
        names = ", ".join(str(p.relative_to(ws.root)) for p in removed[:3]) + (" …" if len(removed) > 3 else "")
        print(f"removed {len(removed)} temporaries an interrupted run left behind: {names}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=(*STAGES, SPECULATION, TUNED, "all", "zoo"), default="all",
                        help="one stage; `zoo` trains the zoo and measures nothing; `speculation` measures lossless "
                             "self-speculation, `tuned` dumps activations and fits the tuned lens, each then "
                             "publishing the results")
    parser.add_argument("--force", action="store_true", help="recompute fresh token stats and exit accuracy too")
    parser.add_argument("--zoo", action="store_true", help="train the zoo first, then measure its checkpoints")
    args = parser.parse_args(argv)
    stages_to_run = {"all": STAGES, SPECULATION: (SPECULATION, "results"), TUNED: (TUNED, "results")}.get(
        args.stage, (args.stage,))
    train_zoo = args.zoo or args.stage == "zoo"
    if train_zoo:
        from eexit_core.settings import choose_the_zoo

        choose_the_zoo()  # before the assets load: they read the scale

    from eexit_core.settings import Environment

    try:  # every setting, before any work: a bad one is named, with what it may be
        environment = Environment.read()
        from pipelines.deployment import check_machine  # loads the assets, which read the registries

        check_machine(environment)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from transformers.utils import logging as hf_logging

    from assets.partitions import (
        decoded_workload_partitions,
        graded_workload_partitions,
        model_partitions,
        model_workload_key,
        workload_partitions,
    )
    from eexit_core import stages

    hf_logging.disable_progress_bar()
    ws = Workspace.default()
    os.chdir(ws.root)  # the results store's token stats view is relative to the root
    _clean_up_after_a_kill(ws)
    runner = Runner(ws)
    abandoned = fail_abandoned_runs(runner.instance)
    if abandoned:
        print(f"marked {len(abandoned)} run(s) an interrupted runner left unfinished as failed", flush=True)
    started = time.perf_counter()
    workloads = workload_partitions.get_partition_keys()
    models = model_partitions.get_partition_keys()
    _say_skipped_models(ws, environment)
    from assets.config import TokenStatsConfig

    settings = TokenStatsConfig().lens_settings(runner.resources["eexit"].device)
    _, workload_registry = stages.registries(ws)

    if train_zoo:
        trained = _train_zoo(runner)
        _say_failures(runner)
        if not trained or runner.failed:
            return 1
        if args.stage == "zoo":
            return 0
        # the zoo's checkpoints become partitions when the definitions load again
        command = [sys.executable, "-m", "pipelines.run", *(["--stage", args.stage] if args.stage != "all" else []),
                   *(["--force"] if args.force else [])]
        return subprocess.call(command)  # the environment carries the zoo's scale
    if environment.zoo is not None:
        stages_to_run = tuple(s for s in stages_to_run if s != "exits")

    if "prompts" in stages_to_run:
        print("workload_prompts", flush=True)
        workloads = [w for w in workloads if runner.run(["workload_prompts"], w, w, availability_record=ws.prompts_record(w))]
    if "checkpoints" in stages_to_run:
        print("model_checkpoints", flush=True)
        models = [m for m in models if runner.run(["model_checkpoints"], m, m, availability_record=ws.checkpoint_record(m))]
    else:
        models = _available_models(ws, models)
    workloads = [w for w in workloads if _workload_available(ws, w)]

    from assets.config import ActivationDumpConfig, activation_dumps_on

    dumps = ActivationDumpConfig().dump_settings(runner.resources["eexit"].device) if activation_dumps_on() else None
    (ws.artifacts_dir / stages.LAYER_ACTIVATIONS).mkdir(parents=True, exist_ok=True)  # DVC expects the stage's output
    per_partition = []
    if "activations" in stages_to_run and dumps is not None:
        per_partition.append("layer_activations")
    if "stats" in stages_to_run:
        per_partition.append("token_layer_stats")
    if "results" in stages_to_run:
        per_partition += ["layer_similarity"]
        if settings.stats is None or "top1_match" in settings.stats:
            per_partition += ["oracle_exits"]  # needs top-1 agreement, not in a cosine-only run
    if per_partition:
        print(" → ".join(per_partition), flush=True)
    staleness = runner.staleness()  # after the inputs ran: their data versions are current
    for model_id in models if per_partition else []:
        for workload_id in workloads:
            selection, note = list(per_partition), ""
            key = model_workload_key(model_id, workload_id)
            if "layer_activations" in selection and not args.force:
                why = _why_dump(ws, staleness, model_id, workload_registry.get(workload_id), dumps)
                if why is None:
                    selection.remove("layer_activations")
                    note = " (dump fresh)"
                else:
                    note = f" (dump: {why})"
            if "token_layer_stats" in selection and not args.force:
                why = _why_run_stats(ws, staleness, model_id, workload_registry.get(workload_id), settings)
                if why is None:
                    selection.remove("token_layer_stats")
                    note += " (stats fresh)"
                else:
                    note += f" ({why})"
            if not selection:
                print(f"  {model_id} × {workload_id}{note}", flush=True)
                continue
            if "token_layer_stats" not in selection and not ws.partition_path(stages.TOKEN_STATS, model_id, workload_id).is_file():
                continue
            runner.run(selection, key, f"{model_id} × {workload_id}{note}", force=args.force)

    if "exits" in stages_to_run:
        _run_exits(runner, ws, models, [w for w in graded_workload_partitions.get_partition_keys() if w in workloads],
                   workload_registry, force=args.force)

    if SPECULATION in stages_to_run:
        _run_speculation(runner, ws, models, [w for w in decoded_workload_partitions.get_partition_keys() if w in workloads],
                         force=args.force)

    if TUNED in stages_to_run:
        _run_tuned(runner, ws, models, workloads, force=args.force)

    ok = True
    if "results" in stages_to_run:
        print("eas_scores → factor_report", flush=True)
        ok = runner.run([*_results_store_keys(), "factor_report"], None, "results store and report")
        if ok:
            _print_scores(ws)
    _say_failures(runner)
    print(f"\ntotal {time.perf_counter() - started:.0f}s")
    # non-zero when anything selected failed, so `dvc repro`, CI and scripts can tell
    return 0 if ok and not runner.failed else 1


def _say_failures(runner: Runner) -> None:
    for heading, lines in (("unavailable here, skipped", runner.unavailable), ("FAILED", runner.failed)):
        if lines:
            print(f"\n{heading}:", file=sys.stderr)
            for line in lines:
                print(f"  - {line}", file=sys.stderr)


def _train_zoo(runner: Runner) -> bool:
    """The zoo group: corpus, each variant (a failed one is named; the others go on), registry."""
    from assets.partitions import zoo_variant_partitions

    print("zoo_corpus → zoo_checkpoints → zoo_models", flush=True)
    if not runner.run(["zoo_corpus"], None, "corpus and tokenizer"):
        return False
    for variant_id in zoo_variant_partitions.get_partition_keys():
        runner.run(["zoo_checkpoints"], variant_id, variant_id)
    return runner.run(["zoo_models"], None, "zoo registry (data/zoo/models.yaml)")


def _why_run_stats(ws: Workspace, staleness, model_id: str, workload, settings) -> str | None:
    """Why a stats partition needs a run, or None when it is fresh: Dagster's stale status
    first, then the stored provenance, which also sees what Dagster cannot (a launchpad run
    with other settings, an artifact deleted or replaced by hand)."""
    from assets.partitions import model_workload_key
    from eexit_core import stages

    why = staleness.why_stale(stages.TOKEN_STATS, model_workload_key(model_id, workload.workload_id))
    if why is None and not stages.token_stats_fresh(ws, model_id, workload, settings):
        why = "stored stats made from other inputs or settings"
    return why


def _why_dump(ws: Workspace, staleness, model_id: str, workload, dumps) -> str | None:
    """Why a partition's activation dump must be made (again), or None when the stored one
    is complete and serves it: Dagster's stale status, then the dump itself, re-hashed."""
    from assets.partitions import model_workload_key
    from eexit_core import stages
    from eexit_core.stages.layer_activations import dump_problem

    why = staleness.why_stale(stages.LAYER_ACTIVATIONS, model_workload_key(model_id, workload.workload_id))
    if why is None:
        problem = dump_problem(ws, model_id, workload, dumps.dtype)
        why = None if problem is None else problem.split(": ", 1)[-1]
    return why


def _say_skipped_models(ws: Workspace, environment) -> None:
    """One line for the registered models this run leaves out, and how to include them."""
    from assets.partitions import skipped_model_ids

    if environment.models is not None or environment.zoo is not None:
        return  # chosen by name, or the zoo's: nothing was left out silently
    skipped = skipped_model_ids(ws, environment)
    if skipped:
        names = ", ".join(skipped[:4]) + (f" and {len(skipped) - 4} more" if len(skipped) > 4 else "")
        print(f"{len(skipped)} registered model(s) have no weights on this machine, skipped: {names} "
              "(EEXIT_MODELS names them, EEXIT_ALLOW_DOWNLOAD=1 fetches hub weights)", flush=True)


def _run_exits(runner: Runner, ws: Workspace, models: list[str], graded: list[str], workload_registry, *,
               force: bool) -> None:
    from assets.partitions import model_workload_key
    from eexit_core import stages

    for asset in (stages.EXIT_ACCURACY, stages.EXIT_ITEMS):  # DVC expects the stage's outputs to exist
        (ws.artifacts_dir / asset).mkdir(parents=True, exist_ok=True)
    if not graded:
        return
    from assets.config import ExitAccuracyConfig

    config = ExitAccuracyConfig()
    settings = config.exit_settings()
    staleness = runner.staleness()
    print(f"exit_accuracy ({config.sweep} sweep)", flush=True)
    for model_id in models:
        for workload_id in graded:
            key = model_workload_key(model_id, workload_id)
            why = "forced" if force else staleness.why_stale(stages.EXIT_ACCURACY, key)
            if why is None and not stages.exit_accuracy_fresh(ws, model_id, workload_registry.get(workload_id), settings):
                why = "stored results made from other items or settings"
            if why is None:
                print(f"  {model_id} × {workload_id} (exits fresh)", flush=True)
                continue
            runner.run(["exit_accuracy"], key, f"{model_id} × {workload_id} ({why})", force=force)


def _run_speculation(runner: Runner, ws: Workspace, models: list[str], decoded: list[str], *, force: bool) -> None:
    from assets.config import SelfSpeculationConfig
    from assets.partitions import model_workload_key
    from eexit_core import stages
    from eexit_core.stages.self_speculation import self_speculation_fresh, served_model

    config = SelfSpeculationConfig()
    settings = config.speculation_settings()
    model_registry, workload_registry = stages.registries(ws)
    staleness = runner.staleness()
    print(f"self_speculation_items ({config.sweep} sweep)", flush=True)
    for model_id in models:
        if not served_model(model_registry.get(model_id)):
            print(f"  {model_id}: a {model_registry.get(model_id).arch_class} model, not served (its state cannot be "
                  "cropped back after a rejected draft)", flush=True)
            continue
        for workload_id in decoded:
            key = model_workload_key(model_id, workload_id)
            why = "forced" if force else staleness.why_stale("self_speculation_items", key)
            if why is None and not self_speculation_fresh(ws, model_id, workload_registry.get(workload_id), settings):
                why = "stored items made from other prompts or settings"
            if why is None:
                print(f"  {model_id} × {workload_id} (fresh)", flush=True)
                continue
            runner.run(["self_speculation_items"], key, f"{model_id} × {workload_id} ({why})", force=force)


def _run_tuned(runner: Runner, ws: Workspace, models: list[str], workloads: list[str], *, force: bool) -> None:
    """Each model's dumps (float32 unless EEXIT_ACTIVATION_DUMPS names a dtype), then its
    tuned lens; a model whose dumps failed is not fitted."""
    from assets.config import ActivationDumpConfig, TunedLensConfig
    from assets.partitions import model_workload_key
    from eexit_core import stages
    from eexit_core.stages.tuned_lens import tuned_lens_problem

    dumps = ActivationDumpConfig().dump_settings(runner.resources["eexit"].device)
    settings = TunedLensConfig().tuned_settings()
    _, workload_registry = stages.registries(ws)
    staleness = runner.staleness()
    print(f"layer_activations ({dumps.dtype}) → tuned_lens", flush=True)
    for model_id in models:
        dumped, fresh = True, 0
        for workload_id in workloads:
            why = "forced" if force else _why_dump(ws, staleness, model_id, workload_registry.get(workload_id), dumps)
            if why is None:
                fresh += 1
                continue
            dumped &= runner.run(["layer_activations"], model_workload_key(model_id, workload_id),
                                 f"{model_id} × {workload_id} (dump: {why})", force=force)
        if fresh:
            print(f"  {model_id}: {fresh} dump(s) fresh", flush=True)
        if not dumped:
            continue
        why = "forced" if force else (staleness.why_stale(stages.TUNED_LENS, model_id)
                                      or tuned_lens_problem(ws, model_id, [workload_registry.get(w) for w in workloads],
                                                            settings))
        if why is None:
            print(f"  {model_id} (tuned lens fresh)", flush=True)
            continue
        runner.run(["tuned_lens"], model_id, f"{model_id} ({why})", force=force)


def _print_scores(ws: Workspace) -> None:
    import polars as pl

    from eexit_core import stages
    from eexit_core.storage import store

    table = stages.eas_table(store.read_table(ws.results_db, "eas_scores"))
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=220, float_precision=3, tbl_hide_dataframe_shape=True):
        print("\nEAS at α = 0.5 under each similarity metric (logit_cos is the default)\n")
        print(table)
    bounds = None
    if _has_table(ws, "exit_skip_bounds"):
        bounds = store.query(ws.results_db, """
            select model_id, workload_id, n_items, full_accuracy, chance_accuracy, above_chance_p, max_skip_ratio,
                   oracle_item_skip_ratio, token_oracle_speedup, note from exit_skip_bounds order by all""")
    if bounds is not None and bounds.height:
        with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=220, float_precision=3, tbl_hide_dataframe_shape=True,
                       fmt_str_lengths=60):
            print("\nTask accuracy under early exit: max skip ratio within the tolerance (exit_skip_bounds)\n")
            print(bounds)
    speculation = None
    if _has_table(ws, "self_speculation"):
        speculation = store.query(ws.results_db, """
            select model_id, workload_id, exit_layer, draft_len, n_prompts, first_acceptance, lens_acceptance,
                   realised_speedup, predicted_speedup, prediction_error
            from self_speculation where chosen and split = 'test' order by all""")
    if speculation is not None and speculation.height:
        with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=220, float_precision=3, tbl_hide_dataframe_shape=True):
            print("\nLossless self-speculation: the (l, k) chosen on half the prompts, measured on the other half\n")
            print(speculation)
    results_db = ws.results_db.relative_to(ws.root)
    print(f"\nresults: {results_db} (try: duckdb {results_db} \"select * from eas_scores\")")
    print(f"report:  {(ws.reports_dir / 'factor_report.md').relative_to(ws.root)}")


def _has_table(ws: Workspace, name: str) -> bool:
    from eexit_core.storage import store

    found = store.query(ws.results_db, f"select count(*) as n from information_schema.tables where table_name = '{name}'")
    return bool(found["n"][0])


if __name__ == "__main__":
    raise SystemExit(main())
