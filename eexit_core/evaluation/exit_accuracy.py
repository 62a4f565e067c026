"""Task accuracy under early exit: the static-exit sweep, dynamic exit policies, the
per-item oracle and the max skip ratio under an accuracy tolerance (the paper's Table 1).

`evaluate_exits` runs one model on one graded workload and returns two tables:

* `items`   -- one row per item × exit rule: the generation (or choice log-likelihoods),
               whether it was right, the layers it used, the wall time. Nothing is lost.
* `summary` -- one row per exit rule (the `exit_accuracy` table): accuracy, mean layers,
               skip ratio, relative accuracy, time per token.

Exit rules (`policy` column):

* `static`       -- every token exits at `exit_layer` (1..L; L is full depth);
* `never_exit`   -- full depth through the batch-of-one decoding loop the dynamic
                    policies use: their accuracy and timing baseline on the same items;
* `<signal><op><threshold>` -- a dynamic policy (`early_exit.ExitPolicy`), `exit_layer` 0;
* `oracle_item`  -- each item right at full depth at its own earliest static layer that
                    gets it right (items wrong at full depth stay there), `exit_layer` 0.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import polars as pl
from torch import nn

from eexit_core import settings
from eexit_core.analysis.exit_summary import (  # noqa: F401  (re-exported: the summary maths lives there, torch-free)
    ITEM_SCHEMA,
    NEVER_EXIT,
    ORACLE_ITEM,
    STATIC,
    SUMMARY_SCHEMA,
    SkipBound,
    item_oracle,
    max_skip_ratio,
    summarise,
)
from eexit_core.decoding import early_exit
from eexit_core.evaluation.grading import GradedItem, GradingContext, grade_answer, grader
from eexit_core.models.adapters import resolve_exit_head

log = logging.getLogger(__name__)


# Dynamic-policy thresholds (looser first). Scoring choices costs a step or two per item,
# so multiple-choice workloads get two thresholds per signal; generation costs a decode
# loop per item, so on CPU it gets one.
CHOICE_POLICIES: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("max_prob", (0.5, 0.9)),
    ("margin", (0.3, 0.8)),
    ("entropy", (2.0, 0.5)),
    ("saturation", (0.9, 0.97)),
)
GENERATION_POLICIES: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("max_prob", (0.9,)),
    ("margin", (0.8,)),
    ("entropy", (0.5,)),
    ("saturation", (0.97,)),
)
FULL_POLICIES: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("max_prob", (0.5, 0.7, 0.9, 0.97, 0.99)),
    ("margin", (0.3, 0.5, 0.8, 0.95)),
    ("entropy", (2.0, 1.0, 0.5, 0.2, 0.05)),
    ("saturation", (0.9, 0.95, 0.97, 0.99, 0.995)),
)



@dataclass(frozen=True)
class ExitSweepSettings:
    """How much of the sweep to run. The defaults fit `make run` on a 2-core CPU; `full()`
    is the GPU-sized sweep (every layer, every item, more thresholds). Every field changes
    what is computed, so all of them key the stored results' freshness; the accuracy
    tolerance of the max skip ratio is applied later, to the stored results
    (`ScoreSettings.tolerance`), and is deliberately not here."""

    # The CPU defaults keep `make run` within its budget on a 2-core machine. Scoring a
    # choice item costs about a second, so 32 of them, which separate SciQ, basic_skills and
    # ARC-Easy full-depth accuracy from chance (one-sided binomial p < 0.05) on both embedded
    # models; decoding under a dynamic policy costs a vocabulary-wide product per candidate
    # layer per token (batch of one), so one item per policy.
    n_items_generate: int | None = 4  # code / math items (None: all drawn prompts)
    n_items_choice: int | None = 32  # multiple-choice items
    n_dynamic_generate: int | None = 1  # code / math items each dynamic policy decodes (batch of one)
    n_dynamic_choice: int | None = 8  # multiple-choice items each dynamic policy scores (None: all)
    static_points: int | None = 4  # static exit layers for generation, strided up to L (None: all)
    # a dynamic policy may exit after these strided layers below L (None: any layer); on
    # a 262k vocabulary each check of a probability signal costs more than a block
    check_points: int | None = 4
    max_new_tokens: int = 32  # enough to time decoding; short of most HumanEval bodies (full(): 384)
    batch_size: int = settings.BATCH_SIZE
    generation_policies: tuple[tuple[str, tuple[float, ...]], ...] = GENERATION_POLICIES
    choice_policies: tuple[tuple[str, tuple[float, ...]], ...] = CHOICE_POLICIES
    sandbox_timeout_s: float = 10.0

    @classmethod
    def full(cls) -> "ExitSweepSettings":
        """Every item, every layer, five thresholds per signal: a GPU-sized sweep."""
        return cls(n_items_generate=None, n_items_choice=None, n_dynamic_generate=None, n_dynamic_choice=None,
                   static_points=None, check_points=None, max_new_tokens=384, batch_size=32,
                   generation_policies=FULL_POLICIES, choice_policies=FULL_POLICIES)

    def exit_policies(self, n_layers: int, generative: bool) -> list[early_exit.ExitPolicy]:
        checks = None if self.check_points is None else tuple(l for l in strided_layers(n_layers, self.check_points) if l < n_layers)
        grid = self.generation_policies if generative else self.choice_policies
        return [early_exit.ExitPolicy(signal, t, checks) for signal, ts in grid for t in ts]

    def items_needed(self, grader_name: str) -> int | None:
        """Prompts to draw for a workload with this grader (its worked examples added)."""
        spec = grader(grader_name)
        n = self.n_items_generate if spec.generative else self.n_items_choice
        return None if n is None else n + spec.exemplars


@dataclass(frozen=True)
class FittedItems:
    """The items a model's context can hold, and the ids of those that were longer."""

    items: list[GradedItem]
    over_context: list[str]


def fit_to_context(items: Sequence[GradedItem], tokenizer, context_length: int | None, rule: str,
                   max_new_tokens: int) -> FittedItems:
    """Each item whose prompt and answer (its longest choice, or `max_new_tokens` generated)
    exceed the context fails (`PromptTooLongError`, naming it), is cut from the left
    (`truncate_left`: the prompt's last tokens, decoded) or is left out (`skip`)."""
    from eexit_core.lens.engine import PromptTooLongError, truncate_left

    if context_length is None:
        return FittedItems(list(items), [])
    kept: list[GradedItem] = []
    over: list[str] = []
    for item in items:
        ids = list(tokenizer(item.prompt, add_special_tokens=True)["input_ids"])
        answer = (max(len(tokenizer(" " + c, add_special_tokens=False)["input_ids"]) for c in item.choices)
                  if item.choices else max_new_tokens)
        room = context_length - answer
        if len(ids) <= room:
            kept.append(item)
            continue
        over.append(item.prompt_id)
        if rule == "fail" or room < 2:
            raise PromptTooLongError(
                f"{item.prompt_id}: its prompt has {len(ids)} tokens and its answer up to {answer}, but the model's "
                f"context is {context_length}; set the workload's over_context to truncate_left or skip",
                n_tokens=len(ids) + answer, context_length=context_length)
        if rule == "truncate_left":
            kept.append(replace(item, prompt=tokenizer.decode(truncate_left(ids, room, tokenizer.bos_token_id),
                                                              skip_special_tokens=True)))
    if not kept:
        raise PromptTooLongError(f"every item is longer than the model's context ({context_length}); nothing to grade",
                                 context_length=context_length)
    return FittedItems(kept, over)


def strided_layers(n_layers: int, points: int | None) -> list[int]:
    """`points` exit layers spread evenly over 1..L, always ending at L (None: all)."""
    if points is None or points >= n_layers:
        return list(range(1, n_layers + 1))
    if points < 1:
        raise ValueError(f"static_points must be >= 1, got {points}")
    return sorted({max(1, round(n_layers * k / points)) for k in range(1, points + 1)})


Progress = Callable[[str], None]
Grade = Callable[[GradedItem, str], bool]


@dataclass
class _Collector:
    rows: list[dict] = field(default_factory=list)

    def add(self, policy: str, exit_layer: int, item: GradedItem, correct: bool, layers: Sequence[int],
            seconds: float, batch_size: int, output: str | None = None,
            logprobs: Sequence[float] | None = None, kv_fill: str = "none") -> None:
        self.rows.append({
            "policy": policy, "exit_layer": exit_layer, "prompt_id": item.prompt_id, "correct": correct,
            "mean_layers": sum(layers) / len(layers) if layers else float("nan"), "n_tokens": len(layers),
            "seconds": seconds, "batch_size": batch_size, "output": output,
            "choice_logprobs": list(logprobs) if logprobs is not None else None, "kv_fill": kv_fill,
        })

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(self.rows, schema=ITEM_SCHEMA)


def evaluate_exits(model: nn.Module, tokenizer, items: Sequence[GradedItem], settings: ExitSweepSettings,
                   progress: Progress = log.info, *, hidden_paths: Sequence[Path] = ()) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Static exits, dynamic policies and the per-item oracle of one model on one workload.
    `hidden_paths` (the workspace) are unreadable to model-written code in the sandbox."""
    if not items:
        raise ValueError("no graded items to evaluate")
    head = resolve_exit_head(model)
    n_layers = head.n_layers
    out = _Collector()
    generative = grader(items[0].grader).generative
    static_items = list(items)
    n_dynamic = settings.n_dynamic_generate if generative else settings.n_dynamic_choice
    dynamic_items = static_items if n_dynamic is None else static_items[:n_dynamic]
    grade = functools.partial(grade_answer, context=GradingContext(settings.sandbox_timeout_s, tuple(hidden_paths)))
    if generative:
        _static_generation(model, tokenizer, head, static_items, strided_layers(n_layers, settings.static_points), settings,
                           grade, out, progress)
    else:
        _static_choices(model, tokenizer, head, static_items, out, progress)
    policies: list[early_exit.ExitPolicy | None] = [None, *settings.exit_policies(n_layers, generative)]
    if generative:
        for policy in policies:
            started = time.perf_counter()
            for item in dynamic_items:
                _dynamic_generation(model, tokenizer, head, item, policy, settings, grade, out)
            progress(f"{policy.name if policy else NEVER_EXIT}: {len(dynamic_items)} items ({time.perf_counter() - started:.1f}s)")
    else:
        started = time.perf_counter()
        for item in dynamic_items:
            _dynamic_choices(model, tokenizer, head, item, policies, out)
        progress(f"{len(policies)} exit rules on {len(dynamic_items)} items ({time.perf_counter() - started:.1f}s)")
    items_table = out.frame()
    return items_table, summarise(items_table, n_layers)


def _static_generation(model, tokenizer, head, items, layers, settings, grade: Grade, out: _Collector,
                       progress: Progress) -> None:
    prompts = [item.prompt for item in items]
    stops = items[0].stops
    for layer in layers:
        started = time.perf_counter()
        gens = early_exit.generate_static(model, tokenizer, prompts, layer, max_new_tokens=settings.max_new_tokens,
                                          stops=stops, batch_size=settings.batch_size, head=head)
        correct = 0
        for item, gen in zip(items, gens):
            ok = grade(item, gen.text)
            correct += ok
            out.add(STATIC, layer, item, ok, gen.exit_layers, gen.decode_s, min(settings.batch_size, len(items)), gen.text)
        progress(f"static exit at layer {layer}/{head.n_layers}: {correct}/{len(items)} right ({time.perf_counter() - started:.1f}s)")


def _static_choices(model, tokenizer, head, items, out: _Collector, progress: Progress) -> None:
    started = time.perf_counter()
    per_layer_correct = [0] * head.n_layers
    for item in items:
        t0 = time.perf_counter()
        logprobs = early_exit.choice_logprobs_by_layer(model, tokenizer, item.prompt, item.choices, head=head)
        seconds = (time.perf_counter() - t0) / head.n_layers
        for layer in range(1, head.n_layers + 1):
            column = logprobs[:, layer - 1].tolist()
            ok = grade_answer(item, column)
            per_layer_correct[layer - 1] += ok
            out.add(STATIC, layer, item, ok, [layer], seconds, 1, logprobs=column)
    progress(f"static exits, log-likelihood at all {head.n_layers} layers: full depth {per_layer_correct[-1]}/{len(items)} "
             f"right ({time.perf_counter() - started:.1f}s)")


def _dynamic_generation(model, tokenizer, head, item: GradedItem, policy, settings: ExitSweepSettings, grade: Grade,
                        out: _Collector) -> None:
    gen = early_exit.generate_dynamic(model, tokenizer, item.prompt, policy, max_new_tokens=settings.max_new_tokens,
                                      stops=item.stops, head=head)
    ok = grade(item, gen.text)
    out.add(policy.name if policy else NEVER_EXIT, 0, item, ok, gen.exit_layers, gen.decode_s, 1, gen.text, kv_fill=gen.kv_fill)


def _dynamic_choices(model, tokenizer, head, item: GradedItem, policies, out: _Collector) -> None:
    scored = early_exit.choice_logprobs_policies(model, tokenizer, item.prompt, item.choices, policies, head=head)
    for policy, scores in zip(policies, scored):
        # all choices' positions run as one batch: batch_size says so, ms_per_token is not realised
        out.add(policy.name if policy else NEVER_EXIT, 0, item, grade_answer(item, scores.logprobs),
                scores.exit_layers, scores.seconds, len(item.choices), logprobs=scores.logprobs)


# --- summaries ---------------------------------------------------------------------------
