"""Where the tests' float32 tolerances come from: one error model, shared by every test that
compares the lens's float32 statistics with a float64 reference (or two float32 runs).

The model (random rounding, Higham & Mary, "A new approach to probabilistic rounding error
analysis", SIAM J. Sci. Comput. 2019): a float32 reduction over ``n`` terms errs by about
``sqrt(n) · u`` relative to its magnitude, ``u = 2**-24`` the unit roundoff, and by more
than ``λ · sqrt(n) · u`` only with probability below ``2 · exp(-λ² / 2)``. A statistic of
one token at one layer passes through three chains of reductions:

1. the forward pass. The reference runs each text alone, the engine in padded batches, so
   the two hidden states differ by the rounding of each block's reductions (inner sizes up
   to ``d_inner``, the MLP width), accumulated over the ``n_layers`` blocks:
   ``n_layers · sqrt(d_inner) · u`` relative;
2. the exit head: the final norm and the LM head's dot products, both over ``d_model``:
   ``2 · sqrt(d_model) · u`` relative to the logits;
3. the vocabulary-wide reductions (log-sum-exp, the KL and entropy sums, the cosines' dots
   and norms): ``sqrt(vocab) · u``.

Their sum is the relative error of a statistic whose magnitude is of order one: the
cosines, probabilities and margins (bounded by 1). ``kl_to_final`` and ``entropy`` are
differences and sums of log-probabilities, whose error grows with their size: they are
compared relative to ``max(1, |reference|)`` (log space). Near zero (the final layer's KL)
that is an absolute comparison, which is the right one: a relative comparison with a KL
of 1e-9 would ask for digits float32 never had. ``top1_match`` and ``topk_overlap`` are
decisions, not sums: they must match up to storing the ratio (e.g. 7/10) in float32, one
rounding (the fixtures' sharpened logits keep every top-k gap far above the logits'
rounding, so no decision may flip).

``λ = 8`` makes a false failure of one value less likely than 3e-14, so none is expected
over the ~10^5 values a test compares. The mutation tests (``tests/test_tolerance.py``)
show the bound is still tight enough to catch a real error of 1e-4 in one statistic of
one token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

UNIT_ROUNDOFF_F32 = 2.0**-24
SAFETY = 8.0  # λ above

DISCRETE_STATS = ("top1_match", "topk_overlap")
# compared relative to max(1, |reference|). A choice's log-likelihood sums the log-probabilities
# of its few tokens; each errs by `relative` times its own size, so the sum errs by at most
# `relative` times (its size + its token count), which λ's margin covers for the one- to
# five-token choices the tests score.
LOG_SPACE_STATS = ("kl_to_final", "entropy", "choice_logprob")
BOUNDED_STATS = ("logit_cos", "logit_cos_raw", "hidden_cos", "max_prob", "margin")


@dataclass(frozen=True)
class Float32Tolerance:
    """The error model above for one model's sizes; ``runs`` float32 sides (1: against a
    float64 reference, 2: two float32 runs of the same thing)."""

    d_model: int
    vocab: int
    n_layers: int
    d_inner: int | None = None
    runs: int = 1

    @classmethod
    def for_model(cls, model, *, runs: int = 1) -> "Float32Tolerance":
        """Sizes from a transformers config (any of the families the tests build)."""
        config = model.config
        text = getattr(config, "get_text_config", lambda: config)()

        def first(*names: str) -> int | None:
            for name in names:
                value = getattr(text, name, None)
                if isinstance(value, int) and value > 0:
                    return value
            return None

        d_model = first("hidden_size", "n_embd", "d_model")
        inner = [v for v in (first("intermediate_size", "ffn_dim", "n_inner", "moe_intermediate_size"),
                             (first("expand") or 0) * d_model, 4 * d_model if first("n_embd") else 0) if v]
        return cls(d_model=d_model, vocab=first("vocab_size"), n_layers=first("num_hidden_layers", "n_layer", "num_layers"),
                   d_inner=max([d_model, *inner]), runs=runs)

    @property
    def relative(self) -> float:
        inner = self.d_inner or self.d_model
        forward = self.n_layers * math.sqrt(inner)
        exit_head = 2.0 * math.sqrt(self.d_model)
        vocabulary = math.sqrt(self.vocab)
        return self.runs * SAFETY * UNIT_ROUNDOFF_F32 * (forward + exit_head + vocabulary)

    def bound(self, stat: str, reference: float) -> float:
        """Largest |float32 − reference| this model explains for one value of `stat`."""
        if stat in DISCRETE_STATS:
            return UNIT_ROUNDOFF_F32 * max(1.0, abs(reference))
        if stat in LOG_SPACE_STATS:
            return self.relative * max(1.0, abs(reference))
        if stat in BOUNDED_STATS:
            return self.relative
        raise KeyError(f"no error model for statistic {stat!r}")

    def excess(self, stat: str, value: float, reference: float) -> float:
        """|value − reference| in units of the bound (≤ 1 passes)."""
        return abs(float(value) - float(reference)) / self.bound(stat, reference)


def worst_excess(tolerance: Float32Tolerance, rows, reference, stats, key) -> dict[str, float]:
    """Per statistic, the worst ratio of error to bound over `rows` (dicts), each compared
    with ``reference[key(row)][stat]``."""
    worst: dict[str, float] = {}
    for row in rows:
        ref = reference[key(row)]
        for stat in stats:
            worst[stat] = max(worst.get(stat, 0.0), tolerance.excess(stat, row[stat], ref[stat]))
    return worst


def assert_within(tolerance: Float32Tolerance, rows, reference, stats, key) -> None:
    worst = worst_excess(tolerance, rows, reference, stats, key)
    assert all(v <= 1.0 for v in worst.values()), (
        f"beyond the float32 error model (relative bound {tolerance.relative:.2e}; error / bound per stat): "
        + " ".join(f"{k}={v:.2f}" for k, v in worst.items())
    )


def assert_arrays_within(tolerance: Float32Tolerance, stat: str, got, want) -> None:
    """Elementwise form of `assert_within` for tensors / arrays / series of one statistic."""
    import numpy as np

    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (stat, got.shape, want.shape)
    bound = np.vectorize(lambda ref: tolerance.bound(stat, ref))(want) if want.size else want
    excess = float((np.abs(got - want) / bound).max()) if want.size else 0.0
    assert excess <= 1.0, (
        f"{stat}: beyond the float32 error model (relative bound {tolerance.relative:.2e}): "
        f"worst error is {excess:.2f}× its bound")
