"""The zoo's checkpoints as models the pipeline measures.

Each checkpoint over training is saved as a Hugging Face folder (config, safetensors,
the zoo's tokenizer) with a manifest of what it is (`zoo_checkpoint.json`: the variant's
factors, seed, step, tokens trained, parameter counts, the corpus fingerprint and the
code version), and registered as a model entry `<variant>-seed<k>@step-NNNNNN` whose
factor metadata come from that manifest. `data/zoo/models.yaml` lists every checkpoint on
disk; `eexit_core.stages.registries` appends it to the model registry.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import torch
import yaml

from eexit_core.registry import ModelEntry, ZooFacts
from eexit_core.zoo.variants import CONTEXT, SIZES, Variant, parameter_counts

MANIFEST = "zoo_checkpoint.json"
RELEASE_DATE = dt.date(2026, 1, 1)  # not a factor inside the zoo; fixed, so a rerun writes the same registry
_TRAINING = {"base": "base", "instruct": "instruct", "ee_aware": "early_exit"}  # recipe → registry `training`


def checkpoint_model_id(variant: Variant, step: int) -> str:
    return f"{variant.model_id}@{revision(step)}"


def revision(step: int) -> str:
    return f"step-{step:06d}"


def variant_name(variant: Variant) -> str:
    """The variant without its seed: what seeds of one variant share."""
    return variant.model_id.rsplit("-seed", 1)[0]


def save_checkpoint(model: torch.nn.Module, tokenizer, folder: Path, variant: Variant, *, step: int, tokens: int,
                    corpus_fingerprint: str, code_version: str) -> None:
    """Write the model and tokenizer in Hugging Face format and the manifest into `folder`
    (the caller's atomic temporary)."""
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    total, active = parameter_counts(model, variant)
    manifest = {
        "model_id": checkpoint_model_id(variant, step), "arch_class": variant.arch_class, "size": variant.size,
        "recipe": variant.recipe, "moe_match": variant.moe_match, "seed": variant.seed, "step": step,
        "training_tokens": tokens, "params_total": total, "params_active": active,
        "architecture": type(model).__name__, "n_layers": SIZES[variant.size].n_layers,
        "d_model": SIZES[variant.size].d_model, "vocab_size": int(model.config.vocab_size),
        "corpus_fingerprint": corpus_fingerprint, "code_version": code_version,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))


def model_entry(folder: Path, root: Path) -> ModelEntry:
    """The registry entry of the checkpoint saved in `folder` (its path relative to the
    workspace `root`, so a DVC-pulled zoo registers where it lands)."""
    manifest = json.loads((folder / MANIFEST).read_text())
    variant = Variant(manifest["arch_class"], manifest["size"], manifest["recipe"], manifest["seed"],
                      manifest["moe_match"])
    arch = "moe" if variant.arch_class == "moe" else variant.arch_class
    moe = f", MoE matched on {variant.moe_match} params" if variant.moe_match else ""
    return ModelEntry(
        model_id=manifest["model_id"],
        display_name=f"zoo {arch} {variant.size}, {variant.recipe}{moe}, seed {variant.seed}, step {manifest['step']}",
        family="zoo", architecture=manifest["architecture"], arch_class=variant.arch_class,
        params_total=manifest["params_total"], params_active=manifest["params_active"],
        n_layers=manifest["n_layers"], d_model=manifest["d_model"], vocab_size=manifest["vocab_size"],
        context_length=CONTEXT, release_date=RELEASE_DATE,
        generation="0", training=_TRAINING[variant.recipe], early_exit_tuned=variant.recipe == "ee_aware",
        license="same as eexit", source={"kind": "local", "path": str(folder.relative_to(root))},
        revision=revision(manifest["step"]),
        zoo=ZooFacts(variant=variant_name(variant), size=variant.size, recipe=variant.recipe,
                     moe_match=variant.moe_match, seed=variant.seed, step=manifest["step"],
                     training_tokens=manifest["training_tokens"], corpus_fingerprint=manifest["corpus_fingerprint"]),
    )


def zoo_registry_yaml(folders: list[Path], root: Path) -> str:
    """The zoo registry listing the checkpoints in `folders`; the first is the reference."""
    entries = [model_entry(folder, root) for folder in folders]
    if not entries:
        raise ValueError("the zoo has no checkpoint to register yet: train it first")
    payload = {"reference_model": entries[0].model_id,
               "models": [entry.model_dump(mode="json", exclude_none=True) for entry in entries]}
    header = "# written by the zoo (python -m pipelines.run --zoo); do not edit: retrain instead\n"
    return header + yaml.safe_dump(payload, sort_keys=False)
