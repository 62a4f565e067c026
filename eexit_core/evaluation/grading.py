"""Graders: is a model's answer to a workload item right?

* ``humaneval_exec``          -- run the completion against the problem's tests in the
                                 sandbox (`sandbox.run_python`), pass@1 with greedy decoding;
* ``numeric_exact``           -- the final number of the generation equals the reference;
* ``multiple_choice_loglik``  -- the choice with the highest log-likelihood is the
                                 reference (lm-evaluation-harness `acc`).

A workload's prompts table (`workloads.load_prompts`) already carries what each grader
needs; `graded_items` turns it into the inputs the exit sweeps feed the model.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

import polars as pl

GRADERS = ("humaneval_exec", "numeric_exact", "multiple_choice_loglik")
GENERATIVE = ("humaneval_exec", "numeric_exact")

# Where a continuation is cut: the HumanEval convention (a new top-level statement ends
# the function body), and the start of a new question for math.
HUMANEVAL_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\n```", "\nassert ")
GSM_STOPS = ("\nQuestion:", "\n\n", "<|im_end|>", "<end_of_turn>")


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
        return HUMANEVAL_STOPS if self.grader == "humaneval_exec" else GSM_STOPS


def graded_items(prompts: pl.DataFrame, grader: str) -> list[GradedItem]:
    """The items of a graded workload (its prompts table), ready to generate or score.

    Math prompts are one-shot: the first item's worked solution shows the answer format
    ("#### <number>") and the item is then left out of the graded set.
    """
    if grader not in GRADERS:
        raise ValueError(f"no grader named {grader!r}; graded workloads use one of {', '.join(GRADERS)}")
    rows = list(prompts.iter_rows(named=True))
    if grader == "humaneval_exec":
        return [_humaneval_item(r) for r in rows]
    if grader == "numeric_exact":
        if len(rows) < 2:
            raise ValueError("a numeric_exact workload needs at least 2 prompts (one is the worked example)")
        exemplar = rows[0]["text"]
        return [_math_item(r, exemplar) for r in rows[1:]]
    return [_choice_item(r) for r in rows]


def _meta(row: dict) -> dict:
    return json.loads(row.get("meta_json") or "{}")


def _humaneval_item(row: dict) -> GradedItem:
    meta = _meta(row)
    missing = [k for k in ("prompt", "test", "entry_point") if k not in meta]
    if missing:
        raise ValueError(f"HumanEval item {row['prompt_id']} lacks {missing} in meta_json")
    return GradedItem(row["prompt_id"], "humaneval_exec", meta["prompt"], row["reference"] or "", meta=meta)


def _math_item(row: dict, exemplar: str) -> GradedItem:
    meta = _meta(row)
    question = meta.get("question") or row["user"]
    if not question or row["reference"] is None:
        raise ValueError(f"math item {row['prompt_id']} lacks a question or reference answer")
    return GradedItem(row["prompt_id"], "numeric_exact", f"{exemplar}\n\nQuestion: {question}\nAnswer:",
                      str(row["reference"]), meta=meta)


def _choice_item(row: dict) -> GradedItem:
    meta = _meta(row)
    choices = tuple(row["choices"] or ())
    if len(choices) < 2 or row["reference"] not in choices:
        raise ValueError(f"multiple-choice item {row['prompt_id']} needs >= 2 choices including its reference")
    context = meta.get("context")
    if not context:
        raise ValueError(f"multiple-choice item {row['prompt_id']} lacks its context in meta_json")
    return GradedItem(row["prompt_id"], "multiple_choice_loglik", context, row["reference"], choices, meta)


# --- math --------------------------------------------------------------------------------

_NUMBER = r"-?\d[\d,]*(?:\.\d+)?"
_FINAL_MARK = re.compile(rf"####\s*[^\d\-]{{0,3}}({_NUMBER})")
_ANSWER_IS = re.compile(rf"answer is[^\d\-]{{0,12}}({_NUMBER})", re.IGNORECASE)
_ANY_NUMBER = re.compile(_NUMBER)


def extract_number(text: str) -> str | None:
    """The final numeric answer of a worked solution: after '####' if present, else after
    'the answer is', else the last number in the text. Commas are dropped."""
    for pattern in (_FINAL_MARK, _ANSWER_IS):
        found = pattern.findall(text)
        if found:
            return found[-1].replace(",", "")
    numbers = _ANY_NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


def numbers_equal(answer: str | None, reference: str) -> bool:
    if answer is None:
        return False
    try:
        return Decimal(answer.replace(",", "")) == Decimal(reference.replace(",", "").strip())
    except InvalidOperation:
        return False


def grade_math(generation: str, reference: str) -> bool:
    return numbers_equal(extract_number(generation), reference)


# --- code --------------------------------------------------------------------------------


def grade_humaneval(item: GradedItem, completion: str, *, timeout_s: float = 10.0,
                    hidden_paths: Sequence[Path] = ()) -> bool:
    """pass@1 of one greedy completion: the problem's tests run in the sandbox, which hides
    the project and `hidden_paths` (the workspace, wherever it lies) from the program.

    Passing needs exit status 0 *and* a random token printed after the tests, so a
    completion that exits early with status 0 (`sys.exit(0)`) is not graded a pass.
    """
    from eexit_core.evaluation.sandbox import SandboxLimits, humaneval_program, run_python

    token = secrets.token_hex(16)
    program = humaneval_program(item.meta["prompt"], completion, item.meta["test"], item.meta["entry_point"])
    program += f"\nprint({token!r}, flush=True)\n"
    result = run_python(program, SandboxLimits(timeout_s=timeout_s, cpu_s=max(1, int(timeout_s))), hidden_paths=hidden_paths)
    return result.passed and token in result.stdout


# --- multiple choice ---------------------------------------------------------------------


def choice_correct(logprobs: Sequence[float], item: GradedItem) -> bool:
    """lm-evaluation-harness `acc`: the highest log-likelihood choice is the reference
    (a tie counts against the model)."""
    best = max(logprobs)
    winners = [c for c, lp in zip(item.choices, logprobs) if lp == best]
    return winners == [item.reference]


def grade_generation(item: GradedItem, generation: str, *, timeout_s: float = 10.0,
                     hidden_paths: Sequence[Path] = ()) -> bool:
    """Grade a generated answer; `timeout_s` bounds a code item's sandboxed test run and
    `hidden_paths` are unreadable to it."""
    if item.grader == "humaneval_exec":
        return grade_humaneval(item, generation, timeout_s=timeout_s, hidden_paths=hidden_paths)
    if item.grader == "numeric_exact":
        return grade_math(generation, item.reference)
    raise ValueError(f"{item.grader} items are scored by log-likelihood, not generation")
