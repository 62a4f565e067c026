"""The assets' run-time knobs as Dagster `Config`: shown, described and editable in the
launchpad (and settable with `--config-json` on the CLI). Every default comes from
`eexit_core.settings`; the EEXIT_* variables, read there once, only choose among them."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from eexit_core import settings
from eexit_core.evaluation.exit_accuracy import ExitSweepSettings
from eexit_core.evaluation.speculation_sweep import SpeculationSettings
from eexit_core.lens.engine import LENS_ENGINES
from eexit_core.lens.tuned import TunedLensSettings
from eexit_core.settings import Environment
from eexit_core.stages import LensSettings, ScoreSettings
from eexit_core.stages.layer_activations import DumpSettings

_ENV = Environment.read()


class TokenStatsConfig(dg.Config):
    """How the lens runs on a partition."""

    top_k: int = Field(default=settings.TOP_K, description="K of `topk_overlap` (the top-K tokens compared)")
    batch_size: int = Field(default=_ENV.batch_size or _ENV.defaults.batch_size, description="prompts per forward pass")
    stats: list[str] | None = Field(
        default=list(_ENV.stats) if _ENV.stats else None,
        description="stats to compute (null: all); only cosines (logit_cos, logit_cos_raw, hidden_cos) runs the "
                    "much faster d-space lens, without oracle exits")
    engine: str = Field(default=_ENV.lens_engine, description=f"vocabulary-wide stats engine: {' | '.join(LENS_ENGINES)}")
    dump_dtype: str | None = Field(
        default=None if _ENV.activation_dumps == "off" else _ENV.activation_dumps,
        description="null: run the model (the live lens); float32 | bfloat16 | float16: read the layer_activations "
                    "dump in that dtype with the exit head alone (EEXIT_ACTIVATION_DUMPS)")
    force: bool = Field(default=False, description="recompute even if the stored stats are fresh "
                                                   "(same checkpoint, prompts, lens code and settings)")

    def lens_settings(self, device: str) -> LensSettings:
        if self.engine not in LENS_ENGINES:
            raise ValueError(f"engine must be one of {sorted(LENS_ENGINES)}, got {self.engine!r} (EEXIT_LENS_ENGINE)")
        if self.dump_dtype is not None and self.dump_dtype not in _DUMP_DTYPES:
            raise ValueError(f"dump_dtype must be null or one of {', '.join(_DUMP_DTYPES)}, got {self.dump_dtype!r}")
        return LensSettings(top_k=self.top_k, batch_size=self.batch_size, device=device,
                            stats=tuple(self.stats) if self.stats else None, engine=self.engine,
                            dump_dtype=self.dump_dtype)


_DUMP_DTYPES = tuple(c for c in settings.ACTIVATION_DUMP_CHOICES if c != "off")


class ActivationDumpConfig(dg.Config):
    """How a partition's residual stream is dumped (issue 25)."""

    dtype: str = Field(default=_ENV.activation_dumps if _ENV.activation_dumps != "off" else "float32",
                       description="storage dtype: float32 (CPU default; stats equal the live lens's) | bfloat16 | "
                                   "float16 (half the size; the README states the error in each stat)")
    budget_gib: float = Field(default=_ENV.dump_budget_gib,
                              description="refuse a partition's dump over this size, before the model runs")
    batch_size: int = Field(default=_ENV.batch_size or _ENV.defaults.batch_size,
                            description="prompts per forward pass (one shard each); keep the lens's batch size")
    force: bool = Field(default=False, description="dump again even if the stored dump is complete and fresh "
                                                   "(same checkpoint, prompts, dtype and capture code)")

    def dump_settings(self, device: str) -> DumpSettings:
        if self.dtype not in _DUMP_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(_DUMP_DTYPES)}, got {self.dtype!r} (EEXIT_ACTIVATION_DUMPS)")
        if not self.budget_gib > 0:
            raise ValueError(f"budget_gib must be above 0, got {self.budget_gib}")
        return DumpSettings(dtype=self.dtype, budget_gib=self.budget_gib, batch_size=self.batch_size, device=device)


_TUNED = TunedLensSettings()


class TunedLensConfig(dg.Config):
    """How a model's tuned lens (learned exit head) is fitted from its activation dumps."""

    steps: int = Field(default=_TUNED.steps, description="Adam steps per layer after the least-squares start")
    learning_rate: float = Field(default=_TUNED.learning_rate, description="Adam's learning rate")
    ridge: float = Field(default=_TUNED.ridge, description="the least-squares start's ridge, relative to the mean "
                                                          "eigenvalue of the layer's Gram matrix")
    fit_vocab: int = Field(default=_TUNED.fit_vocab, description="tokens the fit's softmax runs over (the final "
                                                                 "distributions' most probable); evaluation uses all")
    fit_tokens: int = Field(default=_TUNED.fit_tokens, description="training tokens the fit reads at most (a seeded sample)")
    seed: int = Field(default=_TUNED.seed, description="seed of the token sample and of the control's shuffle")
    force: bool = Field(default=False, description="fit again even if the stored lens is fresh "
                                                   "(same checkpoint, dumps, code and settings)")

    def tuned_settings(self) -> TunedLensSettings:
        if self.steps < 0 or self.fit_vocab < 1 or self.fit_tokens < 1 or not self.learning_rate > 0 or self.ridge < 0:
            raise ValueError("steps and ridge must be at least 0, fit_vocab and fit_tokens at least 1, "
                             "learning_rate above 0")
        return TunedLensSettings(steps=self.steps, learning_rate=self.learning_rate, ridge=self.ridge,
                                 fit_vocab=self.fit_vocab, fit_tokens=self.fit_tokens, seed=self.seed)


def activation_dumps_on() -> bool:
    """Whether this deployment dumps activations and reads the token stats from them."""
    return _ENV.activation_dumps != "off"


class ExitAccuracyConfig(dg.Config):
    """How much of the early-exit accuracy sweep runs."""

    sweep: str = Field(default=_ENV.exit_sweep or _ENV.defaults.exit_sweep,
                       description="cpu: subsampled items and strided layers (make run on a laptop); "
                                   "full: every item and layer, five thresholds per exit signal (GPU)")
    force: bool = Field(default=False, description="recompute even if the stored results are fresh "
                                                   "(same checkpoint, items, code and sweep)")

    def exit_settings(self) -> ExitSweepSettings:
        if self.sweep not in settings.EXIT_SWEEPS:
            raise ValueError(f"sweep must be one of {list(settings.EXIT_SWEEPS)}, got {self.sweep!r} (EEXIT_EXIT_SWEEP)")
        return ExitSweepSettings.full() if self.sweep == "full" else ExitSweepSettings()


class SelfSpeculationConfig(dg.Config):
    """How much of the self-speculation sweep runs (the exit sweep's sizes: cpu or full)."""

    sweep: str = Field(default=_ENV.exit_sweep or _ENV.defaults.exit_sweep,
                       description="cpu: two prompts, 12 tokens, exit layers L/4, L/2, 3L/4, draft lengths 2 and 4; "
                                   "full: every item, 128 tokens, seven exit layers, draft lengths 1, 2, 4 and 8 (GPU)")
    force: bool = Field(default=False, description="recompute even if the stored items are fresh "
                                                   "(same checkpoint, prompts, code and sweep)")

    def speculation_settings(self) -> SpeculationSettings:
        if self.sweep not in settings.EXIT_SWEEPS:
            raise ValueError(f"sweep must be one of {list(settings.EXIT_SWEEPS)}, got {self.sweep!r} (EEXIT_EXIT_SWEEP)")
        return SpeculationSettings.full() if self.sweep == "full" else SpeculationSettings()


class ScoresConfig(dg.Config):
    """How the stored measurements become the results store."""

    alphas: list[float] = Field(default=list(settings.ALPHAS), description="EAS α values to store (0.5 is the paper's)")
    tolerance: float = Field(default=_ENV.tolerance, description="relative accuracy loss allowed for the max skip ratio")
    fallback_reference: str = Field(default=settings.FALLBACK_REFERENCE,
                                    description="eas_relative's reference when the registry's reference model was not run")

    def score_settings(self) -> ScoreSettings:
        return ScoreSettings(alphas=tuple(self.alphas), fallback_reference=self.fallback_reference, tolerance=self.tolerance)
