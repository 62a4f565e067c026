"""DVC in a temporary clone: `dvc repro` builds the artifacts and trains the smoke zoo,
`dvc push` stores them in a local remote, a second clone gets them back with `dvc pull`,
and a repeated `dvc repro` has nothing to do.

The model is a one-block GGUF built here and converted by the checkpoint stage like an
embedded one (its safetensors are a DVC output), measured on the ungraded Shakespeare
workload, so the exit-accuracy stage runs with nothing to do: what is under test is DVC's
bookkeeping, and each of the seven stages still starts the runner (about 6 s each).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, TEXT_PIECES, model_entry_yaml, write_tiny_llama_gguf

pytestmark = pytest.mark.slow

DVC = REPO / ".venv" / "bin" / "dvc"


def _sh(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(args)}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result.stdout


def _clone(source: Path, target: Path, env: dict[str, str]) -> Path:
    _sh(["git", "clone", "--quiet", str(source), str(target)], cwd=source.parent, env=env)
    # the clone shares the set-up: the virtualenv and the downloaded workload sdists
    (target / ".venv").symlink_to(REPO / ".venv")
    (target / "data" / "cache").mkdir(parents=True)
    (target / "data" / "cache" / "sdists").symlink_to(REPO / "data" / "cache" / "sdists")
    return target


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture()
def source_repo(tmp_path) -> Path:
    """A git repository holding exactly the committed project plus this checkout's changes."""
    if not DVC.exists():
        pytest.skip("DVC is not installed: run `make setup`")
    src = tmp_path / "origin"
    ignore = shutil.ignore_patterns(".venv", "data", ".dagster", ".git", "__pycache__", ".pytest_cache", ".hypothesis", "*.egg-info")
    shutil.copytree(REPO, src, ignore=ignore)
    shutil.copytree(REPO / "data" / "registry", src / "data" / "registry")
    shutil.copytree(REPO / "data" / "workloads", src / "data" / "workloads")  # files declared workloads read
    with open(src / "data" / "registry" / "models.yaml", "a") as registry:
        registry.write(_tiny_gguf_entry(tmp_path))
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    _sh(["git", "init", "--quiet"], src, env)
    _sh(["git", "add", "-A"], src, env)
    _sh(["git", "commit", "--quiet", "-m", "snapshot"], src, env)
    return src


def _tiny_gguf_entry(tmp_path: Path) -> str:
    """A registry entry for a one-block GGUF whose context holds a Shakespeare prompt."""
    from eexit_core.storage.artifacts import sha256_file

    gguf = write_tiny_llama_gguf(tmp_path / "tiny.gguf", context_length=512, pieces=TEXT_PIECES)
    source = f"{{kind: gguf_file, path: {gguf}, sha256: {sha256_file(gguf)}, quantization: F32}}"
    return model_entry_yaml("tiny-gguf", source, n_layers=1, context_length=512)


def test_repro_push_pull_in_temporary_clones(source_repo, tmp_path):
    remote = tmp_path / "remote"
    base_env = {
        **os.environ, "EEXIT_MODELS": "tiny-gguf", "EEXIT_WORKLOADS": "shakespeare",
        "DAGSTER_HOME": str(tmp_path / "dagster"), "DVC_NO_ANALYTICS": "1",
    }
    first = _clone(source_repo, tmp_path / "first", base_env)
    env = {**base_env, "EEXIT_ROOT": str(first)}
    _sh([str(DVC), "remote", "modify", "--local", "local", "url", str(remote)], first, env)
    out = _sh([str(DVC), "repro", "results"], first, env)
    assert "Running stage 'token_layer_stats'" in out and "'zoo'" not in out  # the zoo is upstream of nothing
    assert (first / "data" / "results.duckdb").is_file()
    assert "Running stage 'zoo'" in _sh([str(DVC), "repro", "zoo"], first, {**env, "EEXIT_ZOO": "smoke"})
    models = _digest(first / "data" / "models")
    stats = _digest(first / "data" / "artifacts" / "token_layer_stats")
    zoo = _digest(first / "data" / "zoo")
    assert any(name.endswith("model.safetensors") for name in zoo) and "models.yaml" in zoo
    assert any(name.endswith(".safetensors") for name in models)
    assert "Data and pipelines are up to date" in _sh([str(DVC), "status"], first, env)
    assert "didn't change, skipping" in _sh([str(DVC), "repro"], first, env)
    _sh([str(DVC), "push"], first, env)

    second = _clone(source_repo, tmp_path / "second", base_env)
    shutil.copy(first / "dvc.lock", second / "dvc.lock")  # what a researcher commits
    env2 = {**base_env, "EEXIT_ROOT": str(second)}
    _sh([str(DVC), "remote", "modify", "--local", "local", "url", str(remote)], second, env2)
    _sh([str(DVC), "pull"], second, env2)
    assert _digest(second / "data" / "models") == models
    assert _digest(second / "data" / "artifacts" / "token_layer_stats") == stats
    assert _digest(second / "data" / "zoo") == zoo  # the trained zoo, without training it
    assert "didn't change, skipping" in _sh([str(DVC), "repro", "token_layer_stats"], second, env2)

    # A selected partition that fails fails `dvc repro`, which then records nothing for the stage.
    (second / "data" / "broken.jsonl").write_text('{"question": "2 + 2?"}\n')
    with open(second / "data" / "registry" / "workloads.yaml", "a") as registry:
        registry.write(BROKEN_WORKLOAD)
    lock = (second / "dvc.lock").read_text()
    failed = subprocess.run([str(DVC), "repro", "workload_prompts"], cwd=second, capture_output=True, text=True,
                            env={**env2, "EEXIT_WORKLOADS": "shakespeare,broken"}, timeout=900)
    said = failed.stdout + failed.stderr
    assert failed.returncode != 0, said[-2000:]
    assert "- broken: " in said and "'answer'" in said, said[-2000:]
    assert (second / "dvc.lock").read_text() == lock


# its rows have no `answer`, the field its target template names
BROKEN_WORKLOAD = """\
  - workload_id: broken
    domain: math
    description: a template naming a field the rows lack
    source: {kind: datasets, path: json, data_files: data/broken.jsonl, doc_to_text: question, doc_to_target: answer}
    n_prompts: 1
    grader: numeric_exact
"""


def test_dvc_stages_depend_on_the_code_their_freshness_covers():
    """`dvc repro` and the runner's freshness agree on what code makes stats and exits stale."""
    import yaml

    from eexit_core import stages
    from eexit_core.stages.layer_activations import capture_modules

    deps = {name: set(stage.get("deps", [])) for name, stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items()}
    stats_code = {str(p.relative_to(REPO)) for p in stages.lens_modules("kernel")}
    exits_code = {str(p.relative_to(REPO)) for p in stages.exit_code_modules()}
    dump_code = {str(p.relative_to(REPO)) for p in capture_modules()}
    assert _not_covered(dump_code, deps["layer_activations"]) == set()
    assert "data/artifacts/layer_activations" in deps["token_layer_stats"]
    assert _not_covered(stats_code, deps["token_layer_stats"]) == set()
    assert _not_covered(exits_code, deps["exit_accuracy"]) == set()
    assert "eexit_core/evaluation/graders/numeric.py" in exits_code


def _not_covered(files: set[str], deps: set[str]) -> set[str]:
    """The files neither listed nor inside a listed folder (a folder dep covers its files)."""
    return {f for f in files if f not in deps and not any(f.startswith(d.rstrip("/") + "/") for d in deps)}
