"""The zoo's checkpoints as models: a saved checkpoint loads as the model it was, its
registry entry carries the variant's factors, the zoo registry joins the model registry
wherever the workspace lies, and only a zoo run selects the zoo's models."""

from __future__ import annotations

import shutil

import pytest
import torch

from eexit_core.settings import ZOO_WORKLOADS, Environment
from eexit_core.stages import registries
from eexit_core.storage.workspace import Workspace
from eexit_core.zoo.models import checkpoint_model_id, save_checkpoint, zoo_registry_yaml
from eexit_core.zoo.variants import Variant, build_model
from tests.conftest import REPO, build_tokenizer

MOE = Variant("moe", moe_match="total", seed=1)


@pytest.fixture
def zoo_workspace(tmp_path) -> Workspace:
    """A workspace with the real registries and two saved checkpoints of a MoE variant."""
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(REPO / "data" / "registry", ws.data / "registry")
    tokenizer = build_tokenizer()
    folders = []
    for step in (0, 4):
        folder = ws.zoo_dir / "checkpoints" / MOE.model_id / f"step-{step:06d}"
        folder.mkdir(parents=True)
        save_checkpoint(build_model(MOE, len(tokenizer)), tokenizer, folder, MOE, step=step, tokens=step * 1024,
                        corpus_fingerprint="f" * 64, code_version="test")
        folders.append(folder)
    ws.zoo_registry.write_text(zoo_registry_yaml(folders, ws.root))
    return ws


def test_a_checkpoint_is_registered_with_its_factors_and_loads_as_saved(zoo_workspace):
    from transformers import AutoModelForCausalLM

    models, _ = registries(zoo_workspace)
    entry = models.get(checkpoint_model_id(MOE, 4))
    assert entry.model_id == "zoo-moe-total-s-base-seed1@step-000004" and entry.revision == "step-000004"
    assert (entry.arch_class, entry.training, entry.family, entry.n_layers, entry.d_model) == ("moe", "base", "zoo", 4, 128)
    assert entry.params_active < entry.params_total  # two of four experts per token
    assert entry.zoo.variant == "zoo-moe-total-s-base" and entry.zoo.seed == 1 and entry.zoo.training_tokens == 4096
    assert models.get("smollm2-135m-instruct").zoo is None  # the registered models are all still there
    # the file says where relative to the workspace; the loaded entry points there
    assert "path: data/zoo/checkpoints/" in zoo_workspace.zoo_registry.read_text()
    loaded = AutoModelForCausalLM.from_pretrained(entry.source.path)
    built = build_model(MOE, len(build_tokenizer()))
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), built.state_dict().values()))


def test_the_recipe_sets_the_registry_training_field(tmp_path):
    ws = Workspace(tmp_path)
    variant = Variant("dense", recipe="ee_aware")
    folder = ws.zoo_dir / "step-000000"
    folder.mkdir(parents=True)
    save_checkpoint(build_model(variant, 64), build_tokenizer(), folder, variant, step=0, tokens=0,
                    corpus_fingerprint="f" * 64, code_version="test")
    assert "training: early_exit\n  early_exit_tuned: true" in zoo_registry_yaml([folder], ws.root)
    with pytest.raises(ValueError, match="train it first"):
        zoo_registry_yaml([], ws.root)


def test_only_a_zoo_run_selects_the_zoo_and_its_store_adds_the_plain_runs_models(zoo_workspace):
    from assets.partitions import selected_model_ids, selected_workload_ids, skipped_model_ids

    zoo_ids = {checkpoint_model_id(MOE, 0), checkpoint_model_id(MOE, 4)}
    zoo_run = Environment.read({"EEXIT_ZOO": "smoke"})
    assert set(selected_model_ids(zoo_workspace, zoo_run)) == zoo_ids
    assert selected_workload_ids(zoo_workspace, zoo_run) == [w for w in selected_workload_ids(zoo_workspace, Environment.read({}))
                                                             if w in ZOO_WORKLOADS]
    plain = Environment.read({})
    assert not zoo_ids & set(selected_model_ids(zoo_workspace, plain))  # its weights are here, and still not run
    assert not zoo_ids & set(skipped_model_ids(zoo_workspace, plain))  # nor called missing
    named = Environment.read({"EEXIT_MODELS": checkpoint_model_id(MOE, 4)})
    assert selected_model_ids(zoo_workspace, named) == [checkpoint_model_id(MOE, 4)]
    # a zoo run's store also publishes what a plain run measured (nothing is computed for it)
    from assets.partitions import published_model_ids

    assert published_model_ids(zoo_workspace, zoo_run) == [*selected_model_ids(zoo_workspace, zoo_run),
                                                           *selected_model_ids(zoo_workspace, plain)]
    assert published_model_ids(zoo_workspace, named) == [checkpoint_model_id(MOE, 4)]
    assert published_model_ids(zoo_workspace, plain) == selected_model_ids(zoo_workspace, plain)
    with pytest.raises(ValueError, match="EEXIT_ZOO must be one of"):
        Environment.read({"EEXIT_ZOO": "huge"})
