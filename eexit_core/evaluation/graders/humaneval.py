"""``humaneval_exec``: pass@1 of one greedy completion, the problem's tests run in the sandbox."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from pathlib import Path

from eexit_core.evaluation.grading import GradedItem, GradingContext, register_grader

# The HumanEval convention: a new top-level statement ends the function body.
HUMANEVAL_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\n```", "\nassert ")


def humaneval_item(row: dict, exemplars: Sequence[dict]) -> GradedItem:
    meta = row["meta"]
    missing = [k for k in ("prompt", "test", "entry_point") if k not in meta]
    if missing:
        raise ValueError(f"HumanEval item {row['prompt_id']} lacks {missing} in meta_json")
    return GradedItem(row["prompt_id"], "humaneval_exec", meta["prompt"], row["reference"] or "", meta=meta)


def grade_humaneval(item: GradedItem, completion: str, *, timeout_s: float = 10.0,
                    hidden_paths: Sequence[Path] = ()) -> bool:
    """Passing needs exit status 0 *and* a random token printed after the tests, so a
    completion that exits early with status 0 (`sys.exit(0)`) is not graded a pass. The
    sandbox hides the project and `hidden_paths` (the workspace) from the program."""
    from eexit_core.evaluation.sandbox import SandboxLimits, humaneval_program, run_python

    token = secrets.token_hex(16)
    program = humaneval_program(item.meta["prompt"], completion, item.meta["test"], item.meta["entry_point"])
    program += f"\nprint({token!r}, flush=True)\n"
    result = run_python(program, SandboxLimits(timeout_s=timeout_s, cpu_s=max(1, int(timeout_s))), hidden_paths=hidden_paths)
    return result.passed and token in result.stdout


@register_grader("humaneval_exec", generative=True, item=humaneval_item, stops=HUMANEVAL_STOPS,
                 declared_shape="generation")
def grade_code(item: GradedItem, completion: str, context: GradingContext) -> bool:
    return grade_humaneval(item, completion, timeout_s=context.timeout_s, hidden_paths=context.hidden_paths)
