"""`load_exit_head` reads the final norm and LM head from a checkpoint's files without the
blocks' weights: the logits equal the full model's head's, tied and untied, with a logit
softcap, and a checkpoint that names the head's weights otherwise falls back to the model."""

from __future__ import annotations

import pytest
import torch

from eexit_core.models import checkpoints
from eexit_core.models.adapters import resolve_exit_head
from eexit_core.models.checkpoints import Checkpoint, load_exit_head
from tests.conftest import tiny_gemma3, tiny_llama


@pytest.mark.parametrize("build", [lambda v: tiny_llama(v, tied=True), lambda v: tiny_llama(v, tied=False, seed=1),
                                   lambda v: tiny_gemma3(v, softcap=5.0)], ids=["llama-tied", "llama-untied", "gemma3-softcap"])
def test_the_head_alone_gives_the_full_heads_logits_without_the_blocks(build, tokenizer, tmp_path, monkeypatch):
    model = build(len(tokenizer))
    model.save_pretrained(tmp_path / "ckpt")
    monkeypatch.setattr(checkpoints, "load_model", _refuse)
    head = load_exit_head(Checkpoint("tiny", tmp_path / "ckpt", "x", None))
    full = resolve_exit_head(model)
    hidden = torch.randn(5, model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    assert head.n_layers == full.n_layers and head.logit_softcap == full.logit_softcap
    assert torch.equal(head.logits(hidden), full.logits(hidden))
    assert all(p.is_meta for block in head.blocks for p in block.parameters())  # no block weight was read


def test_a_checkpoint_naming_the_head_otherwise_falls_back_to_the_whole_model(tokenizer, tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    model = tiny_llama(len(tokenizer), tied=False, seed=2)
    model.save_pretrained(tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    state = load_file(weights)
    state["output.weight"] = state.pop("lm_head.weight")  # e.g. an older naming transformers renames on load
    save_file(state, weights, metadata={"format": "pt"})
    loaded = []
    monkeypatch.setattr(checkpoints, "load_model", lambda ck, **kw: loaded.append(ck) or (model, None))
    head = load_exit_head(Checkpoint("tiny", tmp_path / "ckpt", "x", None))
    assert loaded and head.lm_head is model.lm_head


def _refuse(*_args, **_kwargs):
    raise AssertionError("the whole model was loaded")
