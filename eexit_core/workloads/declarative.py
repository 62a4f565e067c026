"""Workloads declared in YAML over `datasets`: rows from any file or hub dataset, turned
into prompts by lm-evaluation-harness-style templates.

`doc_to_text` gives the prompt (the context a choice is scored after), `doc_to_target` the
answer and `doc_to_choice` the choices; each is a field name of the row or a Jinja2
template over its fields (sandboxed; an unknown field is an error, not an empty string).
The workload's grader decides the prompt's shape (its `declared_shape`), as lm-eval's
`output_type` does: choices scored after the context (`multiple_choice_loglik`), a
question the model answers (`numeric_exact`); an ungraded workload is teacher-forced on
prompt and answer.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eexit_core.errors import EexitError

if TYPE_CHECKING:
    from eexit_core.registry import WorkloadEntry
    from eexit_core.workloads.sources.declared import DatasetsSource

# `datasets` builders that read files from this machine; any other `path` is a hub id
FILE_BUILDERS = ("json", "csv", "parquet", "text", "arrow")


class TemplateError(EexitError, ValueError):
    """A template names a field the rows do not have, or renders no usable value."""


def dataset_documents(entry: WorkloadEntry, src: DatasetsSource, *, data_root: Path,
                      cache_dir: Path) -> tuple[list[dict[str, Any]], str]:
    """Every row of the declared split, and the dataset's fingerprint (`datasets`' own hash
    of its content and processing, recorded with each prompt)."""
    import datasets

    from eexit_core.workloads.prompts import SourceUnavailableError

    datasets.disable_progress_bars()
    data_files = _data_files(src.data_files, data_root)
    if src.path in FILE_BUILDERS:
        listed = _listed(data_files)
        missing = [f for f in listed if not Path(f).is_file()]
        if not listed or missing:
            raise SourceUnavailableError(
                f"workload {entry.workload_id!r}: data file(s) not here: {', '.join(missing) or '(none named)'}; "
                "fix source.data_files (relative to the workspace root)")
    try:
        table = datasets.load_dataset(src.path, name=src.name, data_files=data_files, split=src.split,
                                      revision=src.revision, cache_dir=str(cache_dir / "hf_datasets"))
    except ValueError as exc:
        if "corresponds to no data" in str(exc):  # how `datasets` says a file has no rows
            raise ValueError(f"workload {entry.workload_id!r}: the dataset {src.path!r} (split {src.split!r}) "
                             "has no rows") from None
        if "split" in str(exc).lower():
            raise ValueError(f"workload {entry.workload_id!r}: {exc} (source.split)") from None
        raise
    except Exception as exc:  # the hub's errors differ by version; a file builder's are real errors
        if src.path in FILE_BUILDERS:
            raise
        raise SourceUnavailableError(
            f"workload {entry.workload_id!r}: the dataset {src.path!r} cannot be reached here "
            f"({type(exc).__name__}); run where the hub is reachable, or ship its rows as a file (path: json)") from None
    if len(table) == 0:
        raise ValueError(f"workload {entry.workload_id!r}: the dataset {src.path!r} (split {src.split!r}) has no rows")
    return [dict(row) for row in table], table._fingerprint


DataFiles = str | list[str] | dict[str, str | list[str]] | None


def _data_files(files: DataFiles, root: Path) -> DataFiles:
    """`data_files` with each path relative to the workspace root made absolute."""
    def resolve(file: str) -> str:
        if file.startswith(PACKAGE_SCHEME):
            return str(package_file(file))
        return file if "://" in file or Path(file).is_absolute() else str(root / file)

    if files is None:
        return None
    if isinstance(files, dict):
        return {split: _data_files(named, root) for split, named in files.items()}
    return resolve(files) if isinstance(files, str) else [resolve(f) for f in files]


PACKAGE_SCHEME = "pkg://"


def package_file(url: str) -> Path:
    """The file `pkg://<distribution>/<path>` names inside an installed distribution."""
    import importlib.metadata

    from eexit_core.workloads.prompts import SourceUnavailableError

    name, _, inner = url.removeprefix(PACKAGE_SCHEME).partition("/")
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        raise SourceUnavailableError(f"{url}: the package {name} is not installed; install it with `make setup`") from None
    return Path(str(dist.locate_file(inner)))


def _listed(files: DataFiles) -> list[str]:
    if files is None:
        return []
    if isinstance(files, dict):
        return [f for named in files.values() for f in _listed(named)]
    return [files] if isinstance(files, str) else list(files)


def declared_rows(entry: WorkloadEntry, src: DatasetsSource, n: int, *, data_root: Path,
                  cache_dir: Path) -> list[dict[str, Any]]:
    """`n` prompts of the declared dataset, seeded; only the drawn rows are rendered."""
    from eexit_core.workloads.prompts import select_prompts

    documents, fingerprint = dataset_documents(entry, src, data_root=data_root, cache_dir=cache_dir)
    candidates = [{"prompt_id": _prompt_id(entry, src, i, doc), "index": i} for i, doc in enumerate(documents)]
    picked = select_prompts(entry, [candidates], n, f"{src.path} split {src.split}")
    shots = _FewShots(entry, src, documents, data_root=data_root, cache_dir=cache_dir)
    return [_prompt(entry, src, c["prompt_id"], documents[c["index"]], fingerprint, shots.before(c["prompt_id"]))
            for c in picked]


def _prompt_id(entry: WorkloadEntry, src: DatasetsSource, index: int, doc: dict[str, Any]) -> str:
    """`id_prefix` (by default '<workload_id>/') and the row's `id_field` (else its number)."""
    prefix = f"{entry.workload_id}/" if src.id_prefix is None else src.id_prefix
    if src.id_field is None:
        return f"{prefix}{index}"
    if src.id_field not in doc:
        raise TemplateError(f"workload {entry.workload_id!r}: id_field {src.id_field!r} is not a field of its rows; "
                            f"they have: {', '.join(sorted(doc))}")
    return f"{prefix}{doc[src.id_field]}"


class _FewShots:
    """lm-eval's few-shot context: `fewshot.n` worked examples (prompt, delimiter, target)
    of the few-shot split, ranked by a seeded hash like the prompts, never the prompt itself."""

    def __init__(self, entry: WorkloadEntry, src: DatasetsSource, documents: list[dict[str, Any]], *,
                 data_root: Path, cache_dir: Path) -> None:
        from eexit_core.workloads.prompts import rank_key

        self.entry, self.src, self.ranked = entry, src, []
        spec = src.fewshot
        if spec is None:
            return
        self.same_split = spec.split in (None, src.split)
        if not self.same_split:
            documents, _ = dataset_documents(entry, src.model_copy(update={"split": spec.split}),
                                             data_root=data_root, cache_dir=cache_dir)
        pool = [(_prompt_id(entry, src, i, doc), doc) for i, doc in enumerate(documents)]
        self.ranked = sorted(pool, key=lambda pair: rank_key(spec.seed, pair[0]))

    def before(self, prompt_id: str) -> str:
        spec = self.src.fewshot
        if spec is None:
            return ""
        examples = [doc for example_id, doc in self.ranked if not (self.same_split and example_id == prompt_id)][:spec.n]
        if len(examples) < spec.n:
            raise TemplateError(f"workload {self.entry.workload_id!r}: fewshot.n is {spec.n} but the few-shot split "
                                f"has only {len(examples)} other row(s)")
        return "".join(f"{self._worked(doc)}{spec.delimiter}" for doc in examples)

    def _worked(self, doc: dict[str, Any]) -> str:
        entry, src = self.entry, self.src
        context = str(render(entry, "doc_to_text", src.doc_to_text, doc))
        if src.doc_to_target is None:
            raise TemplateError(f"workload {entry.workload_id!r}: fewshot needs doc_to_target for the examples' answers")
        target = str(render(entry, "doc_to_target", src.doc_to_target, doc))
        if src.doc_to_choice is not None and _shape(entry, src) == "choices":
            target = _answer(entry, "a few-shot example", target, _choices(entry, src, "a few-shot example", doc))
        return f"{context}{src.target_delimiter}{target}"


def _shape(entry: WorkloadEntry, src: DatasetsSource) -> str:
    """choices (scored after the context), generation (graded), or the ungraded
    teacher-forced text: context and target (loglikelihood) or the document (rolling)."""
    from eexit_core.evaluation.grading import grader

    if entry.graded:
        shape = grader(entry.grader).declared_shape
        if shape is None:
            raise TemplateError(f"workload {entry.workload_id!r}: grader {entry.grader!r} needs a source of its own "
                                "(e.g. kind: humaneval), not a datasets template")
        return shape
    return "rolling" if src.output_type == "rolling" else "loglikelihood"


def _prompt(entry: WorkloadEntry, src: DatasetsSource, prompt_id: str, doc: dict[str, Any],
            fingerprint: str, shots: str) -> dict[str, Any]:
    from eexit_core.workloads.prompts import prompt_row

    shape = _shape(entry, src)
    context = shots + str(render(entry, "doc_to_text", src.doc_to_text, doc))
    target = None if src.doc_to_target is None else str(render(entry, "doc_to_target", src.doc_to_target, doc))
    meta = {"context": context, "question": context, "dataset_fingerprint": fingerprint,
            **{name: render(entry, f"doc_to_meta.{name}", template, doc) for name, template in src.doc_to_meta.items()}}
    if shape == "choices":
        choices = _choices(entry, src, prompt_id, doc)
        answer = _answer(entry, prompt_id, target, choices)
        return prompt_row(prompt_id, f"{context}{src.target_delimiter}{answer}", user=context, assistant=answer,
                          reference=answer, choices=choices, meta={**meta, "gold": choices.index(answer)})
    if shape == "generation":
        if target is None:
            raise TemplateError(f"workload {entry.workload_id!r}: a {entry.grader} workload needs doc_to_target")
        meta["generation_prompt"] = context
        if src.generation_kwargs is not None:
            meta["until"] = list(src.generation_kwargs.until)
        if src.filter is not None:
            meta["answer_filter"] = src.filter.model_dump()
        return prompt_row(prompt_id, f"{context}{src.target_delimiter}{target}", user=context, assistant=target,
                          reference=target, meta=meta)
    text = context if target is None or shape == "rolling" else f"{context}{src.target_delimiter}{target}"
    return prompt_row(prompt_id, text, user=context if target is not None else None, assistant=target, meta=meta)


def _choices(entry: WorkloadEntry, src: DatasetsSource, prompt_id: str, doc: dict[str, Any]) -> list[str]:
    if src.doc_to_choice is None:
        raise TemplateError(f"workload {entry.workload_id!r}: a multiple-choice workload needs doc_to_choice")
    value = render(entry, "doc_to_choice", src.doc_to_choice, doc)
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            raise TemplateError(f"workload {entry.workload_id!r}: doc_to_choice rendered {value!r} for {prompt_id}, "
                                "not a list of choices") from None
    choices = [str(c) for c in value] if isinstance(value, (list, tuple)) else []
    if len(choices) < 2:
        raise TemplateError(f"workload {entry.workload_id!r}: {prompt_id} has {len(choices)} choice(s); "
                            "a multiple-choice item needs at least 2")
    return choices


def _answer(entry: WorkloadEntry, prompt_id: str, target: str | None, choices: list[str]) -> str:
    """The gold choice: the target's text, or (lm-eval's habit) its index among the choices."""
    if target is None:
        raise TemplateError(f"workload {entry.workload_id!r}: a multiple-choice workload needs doc_to_target")
    if target in choices:
        return target
    if target.strip().isdigit() and int(target) < len(choices):
        return choices[int(target)]
    raise TemplateError(f"workload {entry.workload_id!r}: the target {target!r} of {prompt_id} is not among "
                        f"its choices {choices}")


_UNDEFINED = re.compile(r"'([^']+)' is undefined")


def render(entry: WorkloadEntry, which: str, template: str, doc: dict[str, Any]) -> Any:
    """A field's value (a template without `{{`/`{%` names a field), or the rendered
    template; a name the row does not have is an error naming the workload and the fields."""
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    if "{{" not in template and "{%" not in template:
        if template not in doc:
            raise TemplateError(f"workload {entry.workload_id!r}: {which} names the field {template!r}, which its rows "
                                f"do not have; they have: {', '.join(sorted(doc))}")
        return doc[template]
    environment = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    try:
        return environment.from_string(template).render(**doc)
    except jinja2.UndefinedError as exc:
        found = _UNDEFINED.search(str(exc))
        name = found.group(1) if found else str(exc)
        raise TemplateError(f"workload {entry.workload_id!r}: {which} uses {name!r}, which its rows do not have; "
                            f"they have: {', '.join(sorted(doc))}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"workload {entry.workload_id!r}: {which} is not a valid template ({exc.message})") from None
