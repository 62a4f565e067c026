"""Shared fixtures: tiny random-initialised models and a tokenizer built locally (no hub)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

REPO = Path(__file__).resolve().parents[1]

# The fused lens kernel's tests run Triton through its CPU interpreter. Triton reads the
# switch when a kernel is defined, so it is set before any test module imports triton.
os.environ.setdefault("TRITON_INTERPRET", "1")

# Under pytest-xdist (`make test`) each worker is one of n processes on n cores: one torch
# thread each, and in the pipelines they start, or 2 threads per worker on 2 cores thrash
# (a 1 s test took 20 s).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

WORDS = (
    "the a an of to in and is was it he she they we you i that this with for on as be at by "
    "from or not but what all were when there can if which do will one about out up so them "
    "def return print x y n if else for while import class self true false none list int str "
    "question answer yes no q number sum total how many more than less times each every "
    "king queen lord lady thou thee thy art hath doth shall love night day sea ship storm"
).split()


def build_tokenizer(bos: bool = True) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over a fixed vocabulary; unknown words map to <unk>."""
    vocab = {"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3}
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
    for ch in ".,?!:;()=+-*'\"0123456789":
        vocab.setdefault(ch, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    if bos:
        core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return build_tokenizer()


def sharpen(model: torch.nn.Module, scale: float = 4.0) -> torch.nn.Module:
    """Random init gives near-uniform next-token distributions; scale the head so tops differ."""
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(scale)
    return model


def tiny_llama(vocab_size: int, *, layers: int = 4, tied: bool = True, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        tie_word_embeddings=tied, initializer_range=0.2, bos_token_id=2, eos_token_id=3, pad_token_id=0,
    )
    return sharpen(LlamaForCausalLM(config).eval())


def tiny_gemma3(vocab_size: int, *, layers: int = 3, softcap: float | None = 5.0, seed: int = 0):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
        final_logit_softcapping=softcap, initializer_range=0.2, sliding_window=16,
        bos_token_id=2, eos_token_id=3, pad_token_id=0,
    )
    return sharpen(Gemma3ForCausalLM(config).eval())


@pytest.fixture(scope="session")
def llama(tokenizer):
    return tiny_llama(len(tokenizer))


@pytest.fixture(scope="session")
def gemma(tokenizer):
    return tiny_gemma3(len(tokenizer))


TEXTS = [
    "the king was at sea and the ship was in a storm .",
    "def sum ( x , y ) : return x + y",
    "question : how many ships ? answer : 3",
    "thou art love",
]


def model_entry_yaml(model_id: str, source: str, *, architecture: str = "LlamaForCausalLM", n_layers: int = 4,
                     context_length: int = 64) -> str:
    """One models.yaml entry of a tiny Llama (the facts `tiny_llama` builds), for registries
    written by tests; `source` is the YAML flow mapping of its source."""
    return f"""\
  - model_id: {model_id}
    display_name: {model_id}
    family: llama
    architecture: {architecture}
    arch_class: dense
    params_total: 1000
    params_active: 1000
    n_layers: {n_layers}
    d_model: 32
    vocab_size: 100
    context_length: {context_length}
    release_date: 2026-01-01
    generation: "0"
    training: base
    license: none
    source: {source}
"""


# a piece for the word boundary and for each printable ASCII character: any English text
# tokenises, one character a token
TEXT_PIECES = ["\u2581", *(chr(c) for c in range(33, 127))]
TINY_GGUF_FACTS = {"architecture": "LlamaForCausalLM", "n_layers": 1, "context_length": 64}


def write_tiny_llama_gguf(path: Path, q_shape: tuple[int, int] = (16, 16), context_length: int = 64,
                          pieces: list[str] | None = None) -> Path:
    """A one-block float32 Llama GGUF (hidden 16, 4 heads, a 40-token SentencePiece-style
    vocabulary), converted in about 2 s; `q_shape` is attn_q's (rows, cols), to misfit it.
    `pieces` replaces the 37 made-up words (which no real text contains) by a vocabulary
    of its own, e.g. `TEXT_PIECES`, so that prose tokenises to more than its BOS."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_context_length(context_length)
    writer.add_embedding_length(16)
    writer.add_feed_forward_length(32)
    writer.add_head_count(4)
    writer.add_head_count_kv(4)
    writer.add_layer_norm_rms_eps(1e-5)
    pieces = pieces or [f"\u2581w{i}" for i in range(37)]
    vocab = 3 + len(pieces)
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(["<unk>", "<s>", "</s>", *pieces])
    writer.add_token_scores([0.0] * 3 + [-float(i) for i in range(len(pieces))])
    writer.add_token_types([2, 3, 3] + [1] * len(pieces))  # unknown, control, control, then normal
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    rng = np.random.default_rng(0)
    shapes = {"token_embd.weight": (vocab, 16), "output_norm.weight": (16,), "blk.0.attn_norm.weight": (16,),
              "blk.0.ffn_norm.weight": (16,), "blk.0.attn_q.weight": q_shape, "blk.0.attn_k.weight": (16, 16),
              "blk.0.attn_v.weight": (16, 16), "blk.0.attn_output.weight": (16, 16),
              "blk.0.ffn_gate.weight": (32, 16), "blk.0.ffn_up.weight": (32, 16), "blk.0.ffn_down.weight": (16, 32)}
    for name, shape in shapes.items():
        writer.add_tensor(name, rng.standard_normal(shape).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# --- the tiny workspace of the pipeline tests (tests/tiny_run.py), built and run once ----

@pytest.fixture(scope="session")
def tiny_workspace(tmp_path_factory) -> Path:
    """Registries and the tiny model, never run: copy what a test changes."""
    from tests.tiny_run import build_tiny_workspace

    return build_tiny_workspace(tmp_path_factory.mktemp("ws"))


@pytest.fixture(scope="session")
def tiny_run(tiny_workspace, tmp_path_factory):
    """The whole DAG run once on a copy of the tiny workspace; read it, never change it
    (`tiny_run_copy` is the copy to change)."""
    import shutil

    from tests.tiny_run import FinishedRun, run_pipeline

    root = tmp_path_factory.mktemp("finished") / "ws"
    shutil.copytree(tiny_workspace, root, symlinks=True)
    result = run_pipeline(root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return FinishedRun(root, result)


@pytest.fixture
def tiny_run_copy(tiny_run, tmp_path) -> Path:
    """A copy of the finished tiny run, Dagster history included, for one test to change."""
    from tests.tiny_run import copy_of_run

    return copy_of_run(tiny_run.root, tmp_path / "ws")


# --- parallel runs (`make test` runs pytest-xdist with --dist loadgroup) -----------------

# Modules whose tests share state outside their temporary folders run on one worker, in
# order: the embedded models convert once into the repository's data/models (two workers
# would each convert and swap the folder under the other's reader), and the UI tests bind
# Dagster's default port.
_ONE_WORKER_MODULES = ("tests/models/test_embedded.py", "tests/pipelines/test_ui.py")


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = Path(str(item.fspath)).relative_to(REPO).as_posix()
        if module in _ONE_WORKER_MODULES:
            item.add_marker(pytest.mark.xdist_group(module))
