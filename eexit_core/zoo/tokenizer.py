"""The zoo's tokenizer: a byte-level BPE trained on the corpus's train split with the
`tokenizers` library, a few thousand tokens so that tiny models are not all embedding;
and the unigram baseline a trained model has to beat.

Byte-level means every text encodes (no unknown token) and decodes back exactly.
Training is deterministic: the same documents in the same order give the same merges.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from eexit_core.zoo.corpus import Corpus, Document

END_OF_TEXT = "<|endoftext|>"  # between documents; also the BOS
PAD = "<|pad|>"
VOCAB_SIZE = 4096


def train_tokenizer(corpus: Corpus, vocab_size: int = VOCAB_SIZE):
    """A `PreTrainedTokenizerFast` whose BPE was learned on `corpus.train` alone."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size <= 256 + 2:
        raise ValueError(f"vocab_size {vocab_size} leaves no room for merges over the 256 bytes")
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[END_OF_TEXT, PAD], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator((d.text for d in corpus.train), trainer=trainer, length=len(corpus.train))
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT, pad_token=PAD)


def token_stream(tokenizer, documents: Sequence[Document]) -> list[int]:
    """The documents' tokens, each document followed by the end-of-text token."""
    end = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
    ids: list[int] = []
    for document in documents:
        ids += tokenizer(document.text, add_special_tokens=False)["input_ids"]
        ids.append(end)
    return ids


def unigram_cross_entropy(train_ids: Sequence[int], validation_ids: Sequence[int], vocab_size: int) -> float:
    """Nats per validation token under the train split's token frequencies, add-one
    smoothed over the vocabulary: the loss of a model that learned no context at all."""
    counts = Counter(train_ids)
    total = len(train_ids) + vocab_size
    return -sum(math.log((counts[t] + 1) / total) for t in validation_ids) / len(validation_ids)
