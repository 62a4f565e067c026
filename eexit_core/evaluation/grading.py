"""Graders: is a model's answer to a workload item right? A registry, so a grader is one file.

A grader is registered with `@register_grader(name, generative=..., ...)` on its grading
function, in a module of `eexit_core/evaluation/graders/` (each is imported when a grader
is first looked up). It says how a prompts row becomes a `GradedItem`, whether the model
generates an answer (cut at `stops`) or its choices are scored by log-likelihood, how many
leading prompts are worked examples rather than graded items, and how a row of a
`datasets` workload is shaped into a prompt. The registry's names are the values a
workload's `grader` may take (`eexit_core.registry` validates against them).

Built in: ``humaneval_exec`` (the completion passes the problem's tests in the sandbox),
``numeric_exact`` (the generation's final number equals the reference) and
``multiple_choice_loglik`` (the highest log-likelihood choice is the reference, lm-eval's
`acc`).
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

UNGRADED = "none"

# How a row of a `datasets` workload becomes a prompt for this grader: choices scored after
# the context, a generation continuing it, or None for a grader that needs its own source.
DeclaredShape = Literal["choices", "generation"] | None


@dataclass(frozen=True)
class GradedItem:
    """One item as the exit sweeps use it."""

    prompt_id: str
    grader: str
    prompt: str  # generation prompt, or the context choices are scored after
    reference: str
    choices: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def stops(self) -> tuple[str, ...]:
        """The workload's own stop strings (`generation_kwargs.until`), else the grader's."""
        return tuple(self.meta.get("until") or grader(self.grader).stops)


@dataclass(frozen=True)
class GradingContext:
    """What grading may need beyond the item and the answer: the bound on a sandboxed test
    run and the paths model-written code must not read."""

    timeout_s: float = 10.0
    hidden_paths: tuple[Path, ...] = ()


# (item, a generated text or the choices' log-probabilities, context) -> right?
GradeFunction = Callable[[GradedItem, Any, GradingContext], bool]
# (a prompts row with its meta_json parsed into "meta", the worked-example rows) -> item
ItemFunction = Callable[[dict, Sequence[dict]], GradedItem]


@dataclass(frozen=True)
class Grader:
    name: str
    generative: bool  # the model generates its answer; otherwise its choices are scored
    grade: GradeFunction
    item: ItemFunction
    stops: tuple[str, ...] = ()  # where a generation is cut
    exemplars: int = 0  # leading prompts shown as worked examples, not graded
    declared_shape: DeclaredShape = None


_GRADERS: dict[str, Grader] = {}
_discovered = False


def register_grader(name: str, *, generative: bool, item: ItemFunction, stops: Sequence[str] = (),
                    exemplars: int = 0, declared_shape: DeclaredShape = None) -> Callable[[GradeFunction], GradeFunction]:
    """Register the decorated grading function under `name`; a second grader of that name
    is an error naming both, not a silent replacement."""
    if name == UNGRADED or not name.isidentifier():
        raise ValueError(f"grader name {name!r}: use an identifier other than {UNGRADED!r}")
    if generative and declared_shape == "choices":
        raise ValueError(f"grader {name!r}: a generative grader cannot score choices")

    def register(grade: GradeFunction) -> GradeFunction:
        if name in _GRADERS:
            raise ValueError(f"grader {name!r} is registered twice: by {_origin(_GRADERS[name].grade)} and by {_origin(grade)}")
        _GRADERS[name] = Grader(name, generative, grade, item, tuple(stops), exemplars, declared_shape)
        return grade

    return register


def _origin(function: Callable) -> str:
    return f"{function.__module__}.{function.__qualname__}"


def _discover() -> None:
    """Import every module of the graders package once: each registers its graders."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    from eexit_core.evaluation import graders as package

    for module in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        importlib.import_module(f"{package.__name__}.{module.name}")


def grader_names() -> tuple[str, ...]:
    """The registered graders, sorted: what a graded workload's `grader` may be."""
    _discover()
    return tuple(sorted(_GRADERS))


def grader_modules(name: str | None = None) -> list[Path]:
    """The files that define grader `name` (every registered grader's, without a name): a
    grader's code is part of what its workloads' stored exit accuracy depends on."""
    import sys

    specs = [grader(name)] if name is not None else [grader(n) for n in grader_names()]
    return sorted({Path(sys.modules[f.__module__].__file__) for g in specs for f in (g.grade, g.item)})


def grader(name: str) -> Grader:
    _discover()
    if name not in _GRADERS:
        raise ValueError(f"no grader named {name!r}; graded workloads use one of {', '.join(grader_names())}")
    return _GRADERS[name]


def graded_items(prompts: pl.DataFrame, grader_name: str) -> list[GradedItem]:
    """The items of a graded workload (its prompts table), ready to generate or score; the
    grader's worked examples (the first rows) are shown in its prompts, not graded."""
    spec = grader(grader_name)
    rows = [{**row, "meta": json.loads(row.get("meta_json") or "{}")} for row in prompts.iter_rows(named=True)]
    if len(rows) <= spec.exemplars:
        raise ValueError(f"a {grader_name} workload needs more than {spec.exemplars} prompt(s): "
                         f"the first {spec.exemplars} are worked examples")
    exemplars, graded = rows[: spec.exemplars], rows[spec.exemplars:]
    return [spec.item(row, exemplars) for row in graded]


def grade_answer(item: GradedItem, answer: Any, context: GradingContext = GradingContext()) -> bool:
    """Whether `answer` (a generated text, or the choices' log-probabilities) is right; a
    workload's answer filter picks the part of a generation that is graded."""
    answer_filter = item.meta.get("answer_filter")
    if answer_filter and isinstance(answer, str):
        answer = filtered_answer(answer, answer_filter["regex"], answer_filter.get("take", "first"))
    return grader(item.grader).grade(item, answer, context)


def filtered_answer(generation: str, regex: str, take: str = "first") -> str:
    """lm-eval's regex filter: the first (or last) match's first group, or the whole match
    where the pattern has no group; nothing (graded wrong) where it does not match."""
    matches = list(re.finditer(regex, generation))
    if not matches:
        return ""
    match = matches[0] if take == "first" else matches[-1]
    return match.group(1) if match.re.groups else match.group(0)
