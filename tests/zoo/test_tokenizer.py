"""The zoo's tokenizer: a byte-level BPE of the requested size, lossless and deterministic;
the unigram baseline in closed form."""

from __future__ import annotations

import math

import pytest

from eexit_core.zoo.corpus import Document, split_corpus
from eexit_core.zoo.tokenizer import END_OF_TEXT, token_stream, train_tokenizer, unigram_cross_entropy

PROSE = ("Now is the winter of our discontent made glorious summer by this sun of York; and all the clouds "
         "that lour'd upon our house in the deep bosom of the ocean buried.")
CODE = "def add(x: int, y: int) -> int:\n    \"\"\"Sum.\"\"\"\n    return x + y  # ünïcode ✓\n"


@pytest.fixture(scope="module")
def corpus():
    docs = [Document(f"prose/p/{i}", "prose", f"{PROSE} {i}") for i in range(30)]
    docs += [Document(f"code/c/{i}.py", "code", CODE.replace("add", f"add_{i}")) for i in range(30)]
    return split_corpus(docs, validation_fraction=0.2, seed=0)


def test_the_tokenizer_has_the_size_asked_decodes_exactly_and_is_deterministic(corpus):
    tokenizer = train_tokenizer(corpus, vocab_size=400)
    assert len(tokenizer) == 400
    for text in (PROSE, CODE, "never seen: 日本語 \t\x00 🙂"):
        assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    assert len(tokenizer(PROSE)["input_ids"]) < len(PROSE.encode()) / 2  # merges were learned
    again = train_tokenizer(corpus, vocab_size=400)
    assert again.backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()
    stream = token_stream(tokenizer, corpus.validation[:2])
    end = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
    assert stream.count(end) == 2 and stream[-1] == end
    with pytest.raises(ValueError, match="no room for merges"):
        train_tokenizer(corpus, vocab_size=200)


def test_unigram_cross_entropy_in_closed_form():
    # train counts: token 0 twice, token 1 once; vocabulary 4, add-one: p = 3/7, 2/7, 1/7, 1/7
    value = unigram_cross_entropy([0, 0, 1], [0, 1, 3], vocab_size=4)
    assert value == pytest.approx(-(math.log(3 / 7) + math.log(2 / 7) + math.log(1 / 7)) / 3, rel=1e-12)
    uniform = unigram_cross_entropy([], [2, 3], vocab_size=8)
    assert uniform == pytest.approx(math.log(8), rel=1e-12)


def test_post_training_mixes_instructions_with_replayed_pretraining_tokens(corpus, tmp_path):
    """Half the instruct recipe's stream is chat-rendered instructions, half the corpus's
    first tokens, so the shuffled windows keep the model on the language it learned."""
    import numpy as np
    import torch

    from eexit_core.stages.zoo import INSTRUCT_REPLAY_SHARE, _instruct_inputs, checkpoints_dir
    from eexit_core.storage.workspace import Workspace
    from eexit_core.zoo.training import TrainingPlan
    from eexit_core.zoo.variants import Variant

    tokenizer = train_tokenizer(corpus, 300)
    ws, plan = Workspace(tmp_path), TrainingPlan(tokens=16 * 4 * 32, seq_len=32, batch_size=4)
    base_state = checkpoints_dir(ws, Variant("dense")) / f"step-{plan.steps:06d}" / "training_state.pt"
    base_state.parent.mkdir(parents=True)
    torch.save({"model": {"w": torch.ones(1)}}, base_state)
    corpus_ids = np.arange(100_000, 100_000 + 10_000)  # ids no instruction has: where the replay is, is plain
    instruct_plan, ids, weights, fingerprint = _instruct_inputs(ws, Variant("dense", recipe="instruct"), plan,
                                                                tokenizer, corpus_ids)
    replayed = [i for i in ids if i >= 100_000]
    assert replayed == list(range(100_000, 100_000 + len(replayed)))  # the corpus's first tokens, in order
    margin = instruct_plan.seq_len * 64
    assert len(replayed) == round(instruct_plan.tokens * INSTRUCT_REPLAY_SHARE) + margin
    assert len(ids) - len(replayed) == len(replayed)  # as many instruction tokens
    assert torch.equal(weights["w"], torch.ones(1)) and fingerprint.endswith(f"+replay{len(replayed)}")
