"""A learned exit head (the tuned lens of Belrose et al., 2023): one affine translator per
layer, `T_l(h) = A_l h + b_l`, in front of the model's own final norm and LM head, so the
early exit reads `E(T_l(h_l))` instead of `E(h_l)`. Real early-exit systems train their exit
heads; the logit lens (the model's own head) is the untrained baseline. The question it
answers: how much more early exit would a learned exit head allow?

Fitted from activation dumps (no forward pass), layer by layer, to the final layer's
distribution: minimise the mean KL(p_L || softmax(E(T_l(h_l)))) over training tokens.

- Start: the ridge least-squares map from h_l to h_L; then Adam on the KL. Per layer the
  fit keeps whichever of the end, the start and the identity (the own head) has the lowest
  KL on validation tokens (prompts the fit did not read, full vocabulary), so a layer
  where fitting overfits keeps the own head. Starting from least squares rather than the
  identity matters for the shuffled control: a start at the own head would carry the
  token's information into the control.
- The softmax of the fit runs over the `fit_vocab` tokens the final distributions weigh
  most (renormalised there): on a 262k vocabulary that is 64x cheaper and holds almost all
  of p_L's mass. Evaluation (`translated`, then the lens's own stats) uses the full vocabulary.
- Seeded: the token sample and nothing else is random, so a CPU fit is bit-identical.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from eexit_core.lens import engine
from eexit_core.models.adapters import ExitHead


@dataclass(frozen=True)
class TunedLensSettings:
    steps: int = 40  # Adam steps per layer after the start
    learning_rate: float = 1e-3
    ridge: float = 1e-2  # the least-squares start's ridge, relative to the mean eigenvalue of h_l's Gram matrix
    fit_vocab: int = 4096  # tokens the fit's softmax runs over (all, on a smaller vocabulary)
    fit_tokens: int = 1024  # training tokens the fit reads at most (a seeded sample)
    # validation tokens (other prompts than the fit's) that choose, per layer, between the
    # fitted translator, its least-squares start and the own head, over the full vocabulary
    validation_tokens: int = 512
    seed: int = 0


@dataclass(frozen=True)
class Translators:
    """`weight` [L, d, d] and `bias` [L, d]: layer l's residual stream h_l becomes
    `weight[l-1] @ h_l + bias[l-1]` before the exit head."""

    weight: torch.Tensor
    bias: torch.Tensor

    @classmethod
    def identity(cls, n_layers: int, d_model: int) -> "Translators":
        return cls(torch.eye(d_model).repeat(n_layers, 1, 1), torch.zeros(n_layers, d_model))

    def apply(self, residuals: torch.Tensor) -> torch.Tensor:
        """Translate residual streams [L, N, d] layer by layer (float32)."""
        return torch.einsum("lij,lnj->lni", self.weight, residuals.float()) + self.bias[:, None, :]

    def save(self, path: Path, metadata: dict) -> None:
        from safetensors.torch import save_file

        from eexit_core.storage.artifacts import atomic_path

        with atomic_path(path) as tmp:
            save_file({"weight": self.weight.contiguous(), "bias": self.bias.contiguous()}, tmp,
                      metadata={"eexit": json.dumps(metadata, sort_keys=True, default=str)})

    @classmethod
    def load(cls, path: Path) -> tuple["Translators", dict]:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as opened:
            meta = json.loads((opened.metadata() or {}).get("eexit", "{}"))
            return cls(opened.get_tensor("weight"), opened.get_tensor("bias")), meta


@dataclass(frozen=True)
class LayerFit:
    layer: int
    kl_own: float  # the own head's training KL (fit vocabulary, nats)
    kl_start: float
    kl_tuned: float  # the kept translator's training KL
    kept: str  # "fitted" | "least_squares" | "identity" (the own head): the lowest validation KL
    kl_validation_own: float | None = None  # full vocabulary, validation tokens (None: no validation)
    kl_validation: float | None = None  # the kept translator's


def translated(parts: Iterable[engine.ScoredResiduals], translators: Translators) -> Iterator[engine.ScoredResiduals]:
    """Captured or dumped residual streams as the tuned lens sees them: feed the result to
    `engine.stats_frame` with the model's own head for the tuned lens's token stats. The
    last layer stays as the model left it: the final distribution every layer is compared
    with is the model's own output, not its translation."""
    for part in parts:
        streams = translators.apply(part.residuals)
        streams[-1] = part.residuals[-1].float()
        yield engine.ScoredResiduals(streams, part.samples, part.positions, part.routers)


def fit_tuned_lens(head: ExitHead, residuals: torch.Tensor, settings: TunedLensSettings = TunedLensSettings(), *,
                   validation: torch.Tensor | None = None,
                   shuffle_targets: bool = False) -> tuple[Translators, list[LayerFit]]:
    """Translators for every layer (the last included: a check, it should stay the
    identity's equal) fitted on training tokens' residual streams [L, N, d]. Per layer the
    fitted translator, its start and the own head compete on `validation` (streams of
    other prompts, full vocabulary); without it, on the training tokens.

    `shuffle_targets` pairs each token with another token's final layer (its distribution
    and, for the least-squares start, its residual): the control, which can learn what
    needs no token (the marginal distribution) and nothing more, so on held-out tokens it
    does no better than the best constant prediction."""
    generator = torch.Generator().manual_seed(settings.seed)
    n_layers, n_tokens, d_model = residuals.shape
    if n_tokens == 0:
        raise ValueError("the tuned lens needs training tokens; the dump holds none")
    if n_tokens > settings.fit_tokens:
        chosen = torch.randperm(n_tokens, generator=generator)[: settings.fit_tokens].sort().values
        residuals = residuals[:, chosen]
    residuals = residuals.float()
    with torch.no_grad():
        final_logits = engine.final_logits_of(head, residuals)
        vocab = _fit_vocabulary(final_logits, settings.fit_vocab)
        target = torch.log_softmax(final_logits[:, vocab].double(), dim=-1).float()
    h_final = residuals[-1]
    if shuffle_targets:
        pairing = torch.randperm(target.shape[0], generator=generator)
        target, h_final = target[pairing], h_final[pairing]
    restricted = _RestrictedHead(head, vocab)
    judge = _Validation(head, validation, settings, generator, shuffle_targets) if validation is not None else None
    weights, biases, fits = [], [], []
    with _frozen(head.final_norm):
        for index in range(n_layers):
            candidates, training = _fit_layer(restricted, residuals[index], h_final, target, settings)
            if judge is None:
                kept = min(training, key=training.get)
                scores = {}
            else:
                scores = {name: judge.kl(index, *pair) for name, pair in candidates.items()}
                kept = min(scores, key=scores.get)
            weights.append(candidates[kept][0])
            biases.append(candidates[kept][1])
            fits.append(LayerFit(index + 1, training["identity"], training["least_squares"], training[kept], kept,
                                 scores.get("identity"), scores.get(kept)))
    return Translators(torch.stack(weights), torch.stack(biases)), fits


class _Validation:
    """Full-vocabulary KL to the final layer on validation tokens (a seeded sample; the
    control's paired with other tokens' final layers, as its fit is)."""

    def __init__(self, head: ExitHead, residuals: torch.Tensor, settings: TunedLensSettings,
                 generator: torch.Generator, shuffle_targets: bool, chunk: int = 128):
        n_tokens = residuals.shape[1]
        if n_tokens > settings.validation_tokens:
            residuals = residuals[:, torch.randperm(n_tokens, generator=generator)[: settings.validation_tokens].sort().values]
        self.head, self.residuals, self.chunk = head, residuals.float(), chunk
        with torch.no_grad():
            final = engine.final_logits_of(head, self.residuals)
            self.log_p = torch.log_softmax(final.double(), dim=-1).float()
        if shuffle_targets:
            self.log_p = self.log_p[torch.randperm(self.log_p.shape[0], generator=generator)]

    def kl(self, index: int, weight: torch.Tensor, bias: torch.Tensor) -> float:
        total = 0.0
        with torch.no_grad():
            for start in range(0, self.residuals.shape[1], self.chunk):
                h = self.residuals[index, start:start + self.chunk] @ weight.T + bias
                log_q = torch.log_softmax(self.head.logits(h).double(), dim=-1)
                log_p = self.log_p[start:start + self.chunk].double()
                total += float((log_p.exp() * (log_p - log_q)).sum())
        return total / self.residuals.shape[1]


@contextmanager
def _frozen(module: torch.nn.Module | None):
    """The model's final norm without gradients while translators are fitted through it."""
    params = [p for p in module.parameters() if p.requires_grad] if module is not None else []
    for param in params:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param in params:
            param.requires_grad_(True)


def _fit_vocabulary(final_logits: torch.Tensor, size: int) -> torch.Tensor:
    """The `size` tokens with the most mean final probability, each token's top-1 among them."""
    vocab_size = final_logits.shape[-1]
    if vocab_size <= size:
        return torch.arange(vocab_size)
    mass = torch.softmax(final_logits, dim=-1).mean(dim=0)
    mass[final_logits.argmax(dim=-1)] = float("inf")
    return mass.topk(size).indices.sort().values


class _RestrictedHead:
    """The exit head with its LM head cut to a vocabulary subset (differentiable)."""

    def __init__(self, head: ExitHead, vocab: torch.Tensor):
        self.head = head
        weight = head.lm_head.weight.detach()
        self.weight = weight[vocab].float()
        bias = getattr(head.lm_head, "bias", None)
        self.bias = None if bias is None else bias.detach()[vocab].float()

    def log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.head.normed(hidden) @ self.weight.T
        if self.bias is not None:
            logits = logits + self.bias
        if self.head.logit_softcap:
            logits = torch.tanh(logits / self.head.logit_softcap) * self.head.logit_softcap
        return torch.log_softmax(logits, dim=-1)


def _kl(restricted: _RestrictedHead, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean KL(p || q) over tokens, p the targets' distributions, q the head's on `hidden`."""
    return (target.exp() * (target - restricted.log_probs(hidden))).sum(dim=-1).mean()


def _least_squares(h: torch.Tensor, h_final: torch.Tensor, ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The ridge-regularised affine map from h to h_final, in float64."""
    x = torch.cat([h.double(), torch.ones(h.shape[0], 1, dtype=torch.float64)], dim=1)
    gram = x.T @ x
    penalty = ridge * gram.diagonal()[:-1].mean()
    gram[:-1, :-1] += penalty * torch.eye(h.shape[1], dtype=torch.float64)
    solution = torch.linalg.solve(gram, x.T @ h_final.double())  # [d + 1, d]
    return solution[:-1].T.float().contiguous(), solution[-1].float().contiguous()


def _fit_layer(restricted: _RestrictedHead, h: torch.Tensor, h_final: torch.Tensor, target: torch.Tensor,
               settings: TunedLensSettings) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], dict[str, float]]:
    """Least squares, then Adam on the KL: the fitted translator, its start and the own
    head (the identity), with their training KLs. The start never reads the targets'
    pairing except through h_final, so a control with shuffled pairs starts near a constant."""
    d_model = h.shape[1]
    weight0, bias0 = _least_squares(h, h_final, settings.ridge)
    weight = weight0.clone().requires_grad_(True)
    bias = bias0.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([weight, bias], lr=settings.learning_rate)
    for _ in range(settings.steps):
        optimiser.zero_grad()
        _kl(restricted, h @ weight.T + bias, target).backward()
        optimiser.step()
    candidates = {"fitted": (weight.detach(), bias.detach()), "least_squares": (weight0, bias0),
                  "identity": (torch.eye(d_model), torch.zeros(d_model))}
    with torch.no_grad():
        training = {name: float(_kl(restricted, h @ w.T + b, target)) for name, (w, b) in candidates.items()}
    return candidates, training


def fit_report(fits: list[LayerFit]) -> list[dict]:
    return [asdict(f) for f in fits]


@dataclass(frozen=True)
class ConstantPrediction:
    """The best prediction that reads no token: the training tokens' mean final
    distribution, and its most probable token (what the shuffled control can reach)."""

    log_probs: torch.Tensor  # [V]

    @classmethod
    def fit(cls, head: ExitHead, residuals: torch.Tensor, chunk: int = 256) -> "ConstantPrediction":
        total = None
        with torch.no_grad():
            for start in range(0, residuals.shape[1], chunk):  # [chunk, V] at a time: V is 262k on gemma
                logits = engine.final_logits_of(head, residuals[:, start:start + chunk].float()).double()
                part = torch.softmax(logits, dim=-1).sum(dim=0)
                total = part if total is None else total + part
        probs = total / residuals.shape[1]
        return cls(torch.log(probs.clamp_min(1e-300)).float())

    def scores(self, head: ExitHead, parts: Iterable[engine.ScoredResiduals]) -> tuple[float, float, int]:
        """Mean KL(p_L || constant) and top-1 agreement with the final layer over the
        tokens of `parts`, and their number."""
        kl_sum, agree, n = 0.0, 0, 0
        top = int(self.log_probs.argmax())
        for part in parts:
            with torch.no_grad():
                final = engine.final_logits_of(head, part.residuals.float()).double()
                log_p = final - torch.logsumexp(final, dim=-1, keepdim=True)
                kl_sum += float((log_p.exp() * (log_p - self.log_probs.double())).sum())
                agree += int((final.argmax(dim=-1) == top).sum())
                n += final.shape[0]
        return (kl_sum / n, agree / n, n) if n else (float("nan"), float("nan"), 0)
