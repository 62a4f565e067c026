"""The zoo's stages: its corpus and tokenizer, one variant's training, and the registry of
the checkpoints it left (eexit_core/zoo/ holds the parts these put together).

Layout under data/zoo/: `corpus/` (the tokenizer, the token streams of both splits and a
manifest with the corpus fingerprint, split and unigram entropy), `checkpoints/<variant
seed>/step-NNNNNN/` (a Hugging Face folder per checkpoint, with its training state and
manifest), `training/<variant seed>.parquet` (the zoo_training rows of one variant) and
`models.yaml` (the registry of every checkpoint). Each is written atomically.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from eexit_core.storage.artifacts import atomic_dir, write_parquet, write_text
from eexit_core.storage.workspace import Workspace
from eexit_core.zoo.instructions import CHAT_TEMPLATE
from eexit_core.zoo.training import TrainingPlan
from eexit_core.zoo.variants import Variant

INSTRUCT_SHARE_INVERSE = 4  # post-training reads a quarter of the base budget, after it
# Half of the post-training windows replay the pretraining corpus: on instructions alone
# the small dense model forgot the corpus (validation loss 5.1 -> 7.4-7.8 nats, issue 14).
INSTRUCT_REPLAY_SHARE = 0.5
TRAINING_SCHEMA = {"variant": pl.String, "seed": pl.Int64, "step": pl.Int64, "tokens": pl.Int64, "train_loss": pl.Float64,
                   "val_loss": pl.Float64, "unigram_entropy": pl.Float64, "tokens_per_s": pl.Float64}


@dataclass(frozen=True)
class ZooCorpus:
    tokenizer: object  # a transformers PreTrainedTokenizerFast
    train_ids: np.ndarray
    validation_ids: np.ndarray
    fingerprint: str
    unigram_entropy: float


def corpus_dir(ws: Workspace) -> Path:
    return ws.zoo_dir / "corpus"


def build_zoo_corpus(ws: Workspace, vocab_size: int) -> dict:
    """Corpus from the shipped texts and code, its BPE tokenizer and both splits' token
    streams; returns the manifest (also written beside them)."""
    from eexit_core.zoo.corpus import build_corpus
    from eexit_core.zoo.tokenizer import token_stream, train_tokenizer, unigram_cross_entropy

    corpus = build_corpus(ws.sdist_dir, ws.cache_dir)
    tokenizer = train_tokenizer(corpus, vocab_size)
    train_ids = np.asarray(token_stream(tokenizer, corpus.train), dtype=np.int32)
    validation_ids = np.asarray(token_stream(tokenizer, corpus.validation), dtype=np.int32)
    manifest = {
        "fingerprint": corpus.fingerprint, "vocab_size": vocab_size, "seed": corpus.seed,
        "validation_fraction": corpus.validation_fraction,
        "unigram_entropy": unigram_cross_entropy(train_ids.tolist(), validation_ids.tolist(), vocab_size),
        "documents": {"train": len(corpus.train), "validation": len(corpus.validation)},
        "tokens": {"train": int(train_ids.size), "validation": int(validation_ids.size)},
        "domains": sorted({d.domain for d in corpus.train}),
        "validation_documents": [d.doc_id for d in corpus.validation],
        "dropped_duplicates": corpus.dropped_duplicates,
    }
    with atomic_dir(corpus_dir(ws)) as folder:
        tokenizer.save_pretrained(folder / "tokenizer")
        np.save(folder / "train_ids.npy", train_ids)
        np.save(folder / "validation_ids.npy", validation_ids)
        (folder / "corpus.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def load_zoo_corpus(ws: Workspace) -> ZooCorpus:
    from transformers import AutoTokenizer

    folder = corpus_dir(ws)
    if not (folder / "corpus.json").is_file():
        from eexit_core.stages.common import MissingUpstreamError

        raise MissingUpstreamError(f"{folder} is missing: materialise zoo_corpus first")
    manifest = json.loads((folder / "corpus.json").read_text())
    return ZooCorpus(AutoTokenizer.from_pretrained(folder / "tokenizer"), np.load(folder / "train_ids.npy"),
                     np.load(folder / "validation_ids.npy"), manifest["fingerprint"], manifest["unigram_entropy"])


def checkpoints_dir(ws: Workspace, variant: Variant) -> Path:
    return ws.zoo_dir / "checkpoints" / variant.model_id


def training_path(ws: Workspace, variant: Variant) -> Path:
    return ws.zoo_dir / "training" / f"{variant.model_id}.parquet"


def train_zoo_variant(ws: Workspace, variant: Variant, plan: TrainingPlan, *,
                      log: Callable[[str], None] = print) -> pl.DataFrame:
    """Train one variant (resuming from its last checkpoint on disk), saving each checkpoint
    as a registered-ready model folder; returns and stores its zoo_training rows."""
    from eexit_core.storage.provenance import code_version
    from eexit_core.zoo.models import save_checkpoint, variant_name
    from eexit_core.zoo.training import train_variant

    corpus = load_zoo_corpus(ws)
    version = code_version()
    tokenizer, train_ids, start_tokens, initial, fingerprint = corpus.tokenizer, corpus.train_ids.tolist(), 0, None, ""
    if variant.recipe == "instruct":  # post-training: the base twin's last checkpoint, continued on chat turns
        plan, train_ids, initial, fingerprint = _instruct_inputs(ws, variant, plan, tokenizer, corpus.train_ids)
        start_tokens = plan.tokens * INSTRUCT_SHARE_INVERSE  # the base budget before it
        tokenizer.chat_template = CHAT_TEMPLATE

    def save(model, step: int, folder: Path) -> None:
        save_checkpoint(model, tokenizer, folder, variant, step=step,
                        tokens=start_tokens + step * plan.batch_size * plan.seq_len,
                        corpus_fingerprint=corpus.fingerprint, code_version=version)

    rows = train_variant(variant, len(tokenizer), train_ids, corpus.validation_ids.tolist(), plan,
                         checkpoints_dir(ws, variant), save=save, log=log, initial_weights=initial)
    table = pl.DataFrame(
        [{"variant": variant_name(variant), "seed": variant.seed, **row, "tokens": start_tokens + row["tokens"],
          "unigram_entropy": corpus.unigram_entropy} for row in rows],
        schema=TRAINING_SCHEMA,
    )
    write_parquet(table, training_path(ws, variant),
                  metadata={"corpus_fingerprint": corpus.fingerprint, "instruction_fingerprint": fingerprint,
                            "plan": json.dumps(plan.__dict__, default=list)})
    return table


def variant_plan(variant: Variant, plan: TrainingPlan) -> TrainingPlan:
    """The zoo's plan as this variant trains it: post-training reads a quarter of the
    base budget at a third of its learning rate; every other recipe the plan itself."""
    if variant.recipe != "instruct":
        return plan
    return dataclasses.replace(plan, tokens=plan.tokens // INSTRUCT_SHARE_INVERSE, learning_rate=plan.learning_rate / 3)


def _instruct_inputs(ws: Workspace, variant: Variant, plan: TrainingPlan, tokenizer, corpus_ids: np.ndarray):
    """The instruct recipe's plan (a quarter of the base budget, at a third of the
    learning rate), its tokens (chat-rendered instructions, then as many pretraining
    tokens replayed from the start of the corpus: the seeded data order mixes their
    windows), the base twin's final weights and the instruction data's fingerprint."""
    import torch

    from eexit_core.stages.common import MissingUpstreamError
    from eexit_core.zoo.instructions import instruction_stream

    base = dataclasses.replace(variant, recipe="base")
    state = checkpoints_dir(ws, base) / f"step-{plan.steps:06d}" / "training_state.pt"
    if not state.is_file():
        raise MissingUpstreamError(f"{state} is missing: train {base.model_id} (its base twin) before {variant.model_id}")
    instruct_plan = variant_plan(variant, plan)
    margin = instruct_plan.seq_len * 64  # windows to spare: none is read twice
    n_instructions = round(instruct_plan.tokens * (1 - INSTRUCT_REPLAY_SHARE)) + margin
    ids, fingerprint = instruction_stream(tokenizer, n_instructions, seed=variant.seed)
    ids = ids[:n_instructions]
    replay = corpus_ids[: round(instruct_plan.tokens * INSTRUCT_REPLAY_SHARE) + margin].tolist()
    return instruct_plan, ids + replay, torch.load(state, weights_only=False)["model"], f"{fingerprint}+replay{len(replay)}"


def checkpoint_folders(ws: Workspace, variants: list[Variant], plan: TrainingPlan) -> list[Path]:
    """The saved checkpoints of these variants, in variant then step order."""
    folders = []
    for variant in variants:
        for step in variant_plan(variant, plan).checkpoint_steps():
            folder = checkpoints_dir(ws, variant) / f"step-{step:06d}"
            if folder.is_dir():
                folders.append(folder)
    return folders


def write_zoo_registry(ws: Workspace, variants: list[Variant], plan: TrainingPlan) -> list[str]:
    """data/zoo/models.yaml for the checkpoints on disk; returns their model ids."""
    from eexit_core.registry import load_model_registry
    from eexit_core.zoo.models import zoo_registry_yaml

    text = zoo_registry_yaml(checkpoint_folders(ws, variants, plan), ws.root)
    write_text(text, ws.zoo_registry)
    return [m.model_id for m in load_model_registry(ws.zoo_registry).models]


def zoo_training_table(ws: Workspace) -> pl.DataFrame:
    """Every trained variant's zoo_training rows (none before the zoo has trained)."""
    files = sorted((ws.zoo_dir / "training").glob("*.parquet"))
    if not files:
        return pl.DataFrame(schema=TRAINING_SCHEMA)
    return pl.concat([pl.read_parquet(f) for f in files]).sort("variant", "seed", "step")



def zoo_variants(scale: str) -> list[Variant]:
    """The variants a zoo scale trains, each at each of its seeds."""
    from eexit_core.settings import ZOO_SCALES
    from eexit_core.zoo.variants import default_variants

    chosen = ZOO_SCALES[scale]
    variants = default_variants(chosen.seeds, chosen.sizes)
    if not chosen.every_variant:
        variants = [v for v in variants if v.arch_class == "dense" and v.size == chosen.sizes[0]]
    return variants


def zoo_training_plan(scale: str) -> TrainingPlan:
    from eexit_core.settings import ZOO_SCALES

    chosen = ZOO_SCALES[scale]
    return TrainingPlan(tokens=chosen.tokens, seq_len=chosen.seq_len, batch_size=chosen.batch_size,
                        learning_rate=chosen.learning_rate, device=chosen.device)


def final_losses(ws: Workspace) -> pl.DataFrame:
    """Each trained variant and seed at its last checkpoint (`last_checkpoints`)."""
    return last_checkpoints(zoo_training_table(ws))


def last_checkpoints(training: pl.DataFrame) -> pl.DataFrame:
    """zoo_training rows at each variant and seed's last checkpoint: validation loss, the
    unigram entropy and the gap between them (a base model has learned language at 1.5 nats)."""
    last = training.sort("step").group_by("variant", "seed", maintain_order=True).last().sort("variant", "seed")
    return last.select("variant", "seed", "step", "tokens", "val_loss", "unigram_entropy",
                       (pl.col("unigram_entropy") - pl.col("val_loss")).alias("below_unigram"))
