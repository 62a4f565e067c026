"""``datasets``: any prompt set `datasets.load_dataset` reads, through lm-eval-style templates
(the template engine is `eexit_core.workloads.declarative`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from eexit_core.workloads.sources import SourceConfig, SourceContext, register_source

if TYPE_CHECKING:
    from eexit_core.registry import WorkloadEntry


# lm-eval's request types, and the graders each fits: choices scored after the context, a
# continuation generated and graded, or text teacher-forced (a context and its target, or
# the whole document) with no grader.
OutputType = Literal["multiple_choice", "generate_until", "loglikelihood", "rolling"]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GenerationKwargs(_Part):
    until: list[str] = Field(min_length=1, description="a generation is cut at the first of these")


class AnswerFilter(_Part):
    """lm-eval's regex filter: the answer graded is this match of the generation."""

    regex: str = Field(description="a Python regular expression; its first group (or the whole match) is the answer")
    take: Literal["first", "last"] = "first"


class FewShot(_Part):
    """Worked examples before each prompt: `n` rows of `split` (the prompt's own split when
    unset, never the prompt itself), drawn by a seeded ranking like the prompts."""

    n: int = Field(gt=0)
    split: str | None = None
    seed: int = 1234
    delimiter: str = "\n\n"


@register_source
class DatasetsSource(SourceConfig):
    """Any prompt set `datasets.load_dataset` reads: a JSONL, CSV, Parquet or text file
    (`path: json` with `data_files`, relative to the workspace root) or a hub dataset id,
    turned into prompts by lm-evaluation-harness-style templates. Each template is a field
    name of the row or a Jinja2 template over its fields."""

    kind: Literal["datasets"]
    path: str = Field(description="a builder (json, csv, parquet, text) or a hub dataset id")
    data_files: str | list[str] | dict[str, str | list[str]] | None = Field(
        None, description="the files, relative to the workspace root, or pkg://<distribution>/<path> inside an "
        "installed package; a mapping names each split's files")
    name: str | None = Field(None, description="the dataset's configuration")
    split: str = "train"
    revision: str | None = None
    doc_to_text: str = Field(description="the prompt (the context choices are scored after)")
    doc_to_target: str | None = Field(None, description="the answer; for multiple choice the text or the index of a choice")
    doc_to_choice: str | None = Field(None, description="a field holding the list of choices, or a template rendering one")
    id_field: str | None = Field(None, description="a field with a stable item id (else the row number)")
    id_prefix: str | None = Field(None, description="before each item id in the prompt id; by default '<workload_id>/'")
    doc_to_meta: dict[str, str] = Field(
        default_factory=dict, description="fields a grader reads from the prompt's meta: name -> a field or template")
    target_delimiter: str = Field(" ", description="between the prompt and the answer in the teacher-forced text")
    output_type: OutputType | None = Field(None, description="lm-eval's request type; by default the grader's")
    generation_kwargs: GenerationKwargs | None = None
    filter: AnswerFilter | None = None
    fewshot: FewShot | None = None

    def entry_problems(self, entry: WorkloadEntry) -> list[str]:
        from eexit_core.evaluation.grading import grader

        spec = grader(entry.grader) if entry.graded else None
        generative = spec is not None and spec.generative
        wanted = {"multiple_choice": spec is not None and spec.declared_shape == "choices",
                  "generate_until": generative and spec.declared_shape is not None,
                  "loglikelihood": spec is None, "rolling": spec is None}
        problems = []
        if self.output_type is not None and not wanted[self.output_type]:
            needs = {"multiple_choice": "a choice-scoring grader (multiple_choice_loglik)",
                     "generate_until": "a generative grader with a template shape (numeric_exact, ...)",
                     "loglikelihood": "grader: none", "rolling": "grader: none"}[self.output_type]
            problems.append(f"output_type {self.output_type} needs {needs}, not grader {entry.grader}")
        for name in ("generation_kwargs", "filter"):
            if getattr(self, name) is not None and not generative:
                problems.append(f"{name} applies to generated answers; grader {entry.grader} generates none")
        if self.output_type == "rolling" and (self.doc_to_target is not None or self.fewshot is not None):
            problems.append("output_type rolling teacher-forces doc_to_text alone: drop doc_to_target and fewshot")
        return problems

    def rows(self, entry: WorkloadEntry, n: int, context: SourceContext) -> list[dict[str, Any]]:
        from eexit_core.workloads.declarative import declared_rows

        return declared_rows(entry, self, n, data_root=context.data_root, cache_dir=context.cache_dir)
