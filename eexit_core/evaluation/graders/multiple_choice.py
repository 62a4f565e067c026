"""``multiple_choice_loglik``: the choice with the highest log-likelihood after the context
is the reference, lm-evaluation-harness `acc` (a tie counts against the model)."""

from __future__ import annotations

from collections.abc import Sequence

from eexit_core.evaluation.grading import GradedItem, GradingContext, register_grader


def choice_item(row: dict, exemplars: Sequence[dict]) -> GradedItem:
    meta = row["meta"]
    choices = tuple(row["choices"] or ())
    if len(choices) < 2 or row["reference"] not in choices:
        raise ValueError(f"multiple-choice item {row['prompt_id']} needs >= 2 choices including its reference")
    context = meta.get("context")
    if not context:
        raise ValueError(f"multiple-choice item {row['prompt_id']} lacks its context in meta_json")
    return GradedItem(row["prompt_id"], "multiple_choice_loglik", context, row["reference"], choices, meta)


def choice_correct(logprobs: Sequence[float], item: GradedItem) -> bool:
    best = max(logprobs)
    winners = [c for c, lp in zip(item.choices, logprobs) if lp == best]
    return winners == [item.reference]


@register_grader("multiple_choice_loglik", generative=False, item=choice_item, declared_shape="choices")
def grade_choice(item: GradedItem, logprobs: Sequence[float], context: GradingContext) -> bool:
    return choice_correct(logprobs, item)
