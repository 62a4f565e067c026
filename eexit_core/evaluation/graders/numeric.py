"""``numeric_exact``: the generation's final number equals the reference. Prompts are
one-shot: the first prompt's worked solution shows the answer format ("#### <number>")."""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

from eexit_core.evaluation.grading import GradedItem, GradingContext, register_grader

# A generation is cut where a new question starts (or the chat turn ends).
GSM_STOPS = ("\nQuestion:", "\n\n", "<|im_end|>", "<end_of_turn>")

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


def math_item(row: dict, exemplars: Sequence[dict]) -> GradedItem:
    """The worked example, then the item: its own generation prompt where its source made
    one (a declared workload's template), else `Question: ...\nAnswer:`."""
    meta = row["meta"]
    question = meta.get("question") or row["user"]
    if not question or row["reference"] is None:
        raise ValueError(f"math item {row['prompt_id']} lacks a question or reference answer")
    ask = meta.get("generation_prompt") or f"Question: {question}\nAnswer:"
    prompt = f"{exemplars[0]['text']}\n\n{ask}"
    return GradedItem(row["prompt_id"], "numeric_exact", prompt, str(row["reference"]), meta=meta)


def grade_math(generation: str, reference: str) -> bool:
    return numbers_equal(extract_number(generation), reference)


@register_grader("numeric_exact", generative=True, item=math_item, stops=GSM_STOPS, exemplars=1,
                 declared_shape="generation")
def grade_numeric(item: GradedItem, generation: str, context: GradingContext) -> bool:
    return grade_math(generation, item.reference)
