"""Every run-time default in one place, and the one module that reads the EEXIT_* variables.

The variables only choose defaults: a deployment (`local` or `cluster`) picks device,
batch size, exit sweep and which models run; every other variable applies to both. The
Dagster resources and partitions are built from `Environment.read()`; code that is not
driven by a deployment (a notebook, the tests) uses the constants directly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

# --- defaults (the only place each is written) -----------------------------------------

TOP_K = 10  # `topk_overlap` compares the top-K tokens
BATCH_SIZE = 8  # prompts per forward pass of the lens (and of static-exit generation)
LENS_ENGINE = "eager"  # how the vocabulary-wide stats run: eager | compiled | kernel
LENS_ENGINE_NAMES = ("eager", "compiled", "kernel")
ALPHAS = (0.25, 0.5, 0.75)  # EAS α values stored (0.5 is the paper's)
BOOTSTRAP_SAMPLES = 1000  # replicates behind every interval (RQ1 correlations, RQ2 EAS and contrasts)
TOLERANCE = 0.05  # relative accuracy loss allowed for the max skip ratio (the paper's 5 %)
FALLBACK_REFERENCE = "smollm2-135m-instruct"  # eas_relative's reference when the registry's was not run
EXIT_SWEEPS = ("cpu", "full")
STORE_LOCK_WAIT_S = 60.0  # how long publishing waits for another process to release the results store
# activation dumps (issue 25): "off" runs the lens live; a dtype keeps every scored token's
# residual stream in it (layer_activations) and computes token stats from the dump
ACTIVATION_DUMPS = "off"
ACTIVATION_DUMP_CHOICES = ("off", "float32", "bfloat16", "float16")
# the largest dump of one model × workload partition: 16 GiB holds 4 096 tokens of an 8B
# model (32 layers × d_model 4 096) in float32 four times over
DUMP_BUDGET_GIB = 16.0


@dataclass(frozen=True)
class ZooScale:
    """How big a zoo is trained (eexit_core/zoo/): every variant reads `tokens` tokens."""

    tokens: int
    seeds: tuple[int, ...]
    every_variant: bool  # False: the small dense model and its instruct and early-exit-aware twins only
    sizes: tuple[str, str] = ("s", "m")  # the base size and the larger dense model (eexit_core/zoo/variants.SIZES)
    seq_len: int = 128
    batch_size: int = 8
    # 3e-3 gave the lowest validation loss after 600 steps of the small dense model among
    # 2e-3, 3e-3, 4e-3 and 6e-3 (5.14, against 5.30, 5.24 and 5.31 nats)
    learning_rate: float = 3e-3
    device: str = "cpu"


ZOO_SCALES: dict[str, ZooScale] = {
    # the CPU default: 600 steps of 8 x 128 tokens per variant and seed
    "cpu": ZooScale(tokens=600 * 8 * 128, seeds=(0, 1), every_variant=True),
    # a look in a minute (and the tests): three variants, eight steps
    "smoke": ZooScale(tokens=8 * 8 * 128, seeds=(0,), every_variant=False),
    # one GPU: the same variants about 12x (l) and 15x (xl) larger and 10x the tokens
    # (3.2 epochs of the corpus, within the ~4 that repeat about as well as new data,
    # Muennighoff et al. 2023), at a learning rate the larger widths tolerate
    "gpu": ZooScale(tokens=750 * 16 * 512, seeds=(0, 1), every_variant=True, sizes=("l", "xl"), seq_len=512,
                    batch_size=16, learning_rate=1e-3, device="cuda"),
}
ZOO_VOCAB_SIZE = 4096
LEARNED_LANGUAGE_NATS = 1.5  # a base model at the end of its budget: this far below the unigram entropy (issue 14)
ZOO_WORKLOADS = ("shakespeare", "humaneval", "arithmetic")  # prose, code, math: EAS of every checkpoint


@dataclass(frozen=True)
class DeploymentDefaults:
    """What a deployment chooses when no variable says otherwise."""

    device: str
    batch_size: int
    exit_sweep: str
    every_registered_model: bool  # False: only the embedded models (no network needed)


DEPLOYMENTS: dict[str, DeploymentDefaults] = {
    "local": DeploymentDefaults(device="cpu", batch_size=BATCH_SIZE, exit_sweep="cpu", every_registered_model=False),
    "cluster": DeploymentDefaults(device="cuda", batch_size=4, exit_sweep="full", every_registered_model=True),
}


# --- the environment -------------------------------------------------------------------


@dataclass(frozen=True)
class Environment:
    """The EEXIT_* variables, parsed and checked; None where a variable is not set."""

    root: Path | None
    deployment: str
    models: tuple[str, ...] | None
    workloads: tuple[str, ...] | None
    batch_size: int | None
    allow_download: bool
    stats: tuple[str, ...] | None
    exit_sweep: str | None
    tolerance: float
    lens_engine: str
    zoo: str | None  # a ZOO_SCALES name: the run measures the zoo's checkpoints (and `--zoo` trains them)
    activation_dumps: str = ACTIVATION_DUMPS  # one of ACTIVATION_DUMP_CHOICES
    dump_budget_gib: float = DUMP_BUDGET_GIB

    @property
    def defaults(self) -> DeploymentDefaults:
        return DEPLOYMENTS[self.deployment]

    @classmethod
    def read(cls, environ: Mapping[str, str] | None = None) -> "Environment":
        env = os.environ if environ is None else environ
        deployment = env.get("EEXIT_DEPLOYMENT", "local")
        if deployment not in DEPLOYMENTS:
            raise ValueError(f"EEXIT_DEPLOYMENT must be one of {sorted(DEPLOYMENTS)}, got {deployment!r}")
        sweep = env.get("EEXIT_EXIT_SWEEP") or None
        if sweep is not None and sweep not in EXIT_SWEEPS:
            raise ValueError(f"EEXIT_EXIT_SWEEP must be one of {list(EXIT_SWEEPS)}, got {sweep!r}")
        root = env.get("EEXIT_ROOT")
        return cls(
            root=Path(root).resolve() if root else None,
            deployment=deployment,
            models=_ids(env, "EEXIT_MODELS"),
            workloads=_ids(env, "EEXIT_WORKLOADS"),
            batch_size=_batch_size(env),
            allow_download=_flag(env, "EEXIT_ALLOW_DOWNLOAD"),
            stats=_stats(env),
            exit_sweep=sweep,
            tolerance=_tolerance(env),
            lens_engine=_one_of(env, "EEXIT_LENS_ENGINE", LENS_ENGINE_NAMES, LENS_ENGINE),
            zoo=_one_of(env, "EEXIT_ZOO", tuple(ZOO_SCALES), "cpu") if env.get("EEXIT_ZOO") else None,
            activation_dumps=_one_of(env, "EEXIT_ACTIVATION_DUMPS", ACTIVATION_DUMP_CHOICES, ACTIVATION_DUMPS),
            dump_budget_gib=_dump_budget(env),
        )


SANDBOX_OS_LAYERS = "EEXIT_SANDBOX_OS_LAYERS"


def sandbox_os_layers(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the sandbox adds its namespace and uid layers (`EEXIT_SANDBOX_OS_LAYERS=0`
    switches them off, e.g. to test the audit hook alone). Read at each sandboxed run, not
    when the code location loads, because it concerns one process tree, not the pipeline."""
    env = os.environ if environ is None else environ
    return env.get(SANDBOX_OS_LAYERS, "1").strip().lower() not in ("0", "false", "no", "off")


ZOO = "EEXIT_ZOO"


def choose_the_zoo(environ: MutableMapping[str, str] | None = None) -> str:
    """What the runner's `--zoo` does before the assets load: EEXIT_ZOO set to the CPU
    scale where it is unset, so that the zoo assets train it and a run measures it."""
    env = os.environ if environ is None else environ
    env.setdefault(ZOO, "cpu")
    return env[ZOO]


KILL_AT = "EEXIT_KILL_AT"


def kill_point(environ: Mapping[str, str] | None = None) -> str | None:
    """Fault injection for the test suite (tests/test_faults.py): a write whose name holds
    this text kills its process (SIGKILL) just before committing, as a crash there would.
    Unset in normal use; read at each write, like the sandbox switch above."""
    env = os.environ if environ is None else environ
    return env.get(KILL_AT) or None


def _ids(env: Mapping[str, str], name: str) -> tuple[str, ...] | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    chosen = tuple(x.strip() for x in raw.split(",") if x.strip())
    if not chosen:  # e.g. " , ": the user meant to choose, and chose nothing
        raise ValueError(f"{name} is set to {raw!r}, which names no id; give comma-separated ids or unset it")
    return chosen


def _stats(env: Mapping[str, str]) -> tuple[str, ...] | None:
    from eexit_core.storage.schema import STAT_COLUMNS

    chosen = _ids(env, "EEXIT_STATS")
    unknown = [s for s in chosen or () if s not in STAT_COLUMNS]
    if unknown:
        raise ValueError(f"EEXIT_STATS names unknown statistics {unknown}; choose from {', '.join(STAT_COLUMNS)}")
    return chosen


def _one_of(env: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = env.get(name) or default
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "0")
    if raw not in ("0", "1"):
        raise ValueError(f"{name} must be 0 or 1, got {raw!r}")
    return raw == "1"


def _batch_size(env: Mapping[str, str]) -> int | None:
    raw = env.get("EEXIT_BATCH_SIZE")
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"EEXIT_BATCH_SIZE must be a whole number such as {BATCH_SIZE}, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"EEXIT_BATCH_SIZE must be at least 1, got {value}")
    return value


def _tolerance(env: Mapping[str, str]) -> float:
    raw = env.get("EEXIT_TOLERANCE", str(TOLERANCE))
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"EEXIT_TOLERANCE must be a number such as {TOLERANCE}, got {raw!r}") from None
    if not 0 <= value < 1:
        raise ValueError(f"EEXIT_TOLERANCE is a relative accuracy loss in [0, 1), got {value}")
    return value


def _dump_budget(env: Mapping[str, str]) -> float:
    raw = env.get("EEXIT_DUMP_BUDGET_GIB", str(DUMP_BUDGET_GIB))
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"EEXIT_DUMP_BUDGET_GIB must be a number of GiB such as {DUMP_BUDGET_GIB}, got {raw!r}") from None
    if not value > 0:
        raise ValueError(f"EEXIT_DUMP_BUDGET_GIB must be above 0, got {value}")
    return value
