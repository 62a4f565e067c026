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
