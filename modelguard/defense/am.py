"""Adaptive Misinformation (Kariyappa & Qureshi): low-confidence queries get a misinformation answer (spec §5)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from modelguard.defense.base import Defense, check_probs, release_dtype
from modelguard.utils.checks import check_number

GATE_SLOPE = 1000.0  # the gate is sigmoid(1000·(τ − y_max)), §5.2
MISINFO_SMOOTH = 1e-7  # log(1 − p + 1e-7) in the misinformation loss, §5.1


def misinformation_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The misinformation model's training loss (§5.1), mean over the batch.

    ``CrossEntropy(log(1 − softmax(logits) + 1e-7), targets)``: cross-entropy applies its
    own log-softmax, so per sample this is ``−log[(1 − p̂_y + 1e-7) / Σ_j (1 − p̂_j + 1e-7)]``,
    which pushes probability away from the true class.
    """
    return F.cross_entropy(torch.log(1.0 - torch.softmax(logits, dim=1) + MISINFO_SMOOTH), targets)


def outlier_exposure_loss(logits: torch.Tensor) -> torch.Tensor:
    """Outlier-exposure term for the victim (§5.1): cross-entropy to the uniform
    distribution, ``mean_batch[logsumexp(z) − mean_k z_k]``. The victim's step adds
    ``λ_OE`` times this, on an OE batch, to its usual cross-entropy."""
    return (torch.logsumexp(logits, dim=1) - logits.mean(dim=1)).mean()


class AdaptiveMisinformation(Defense):
    """``y' = (1 − h)·y + h·ŷ`` with ``ŷ = softmax(f̂(x))`` from the misinformation model.

    ``h = sigmoid(1000·(τ − max_j y_j))`` per row when ``adaptive`` (a steep soft gate, as in
    the original, not a hard threshold), else ``h = τ`` for every row. Confident
    (in-distribution) answers pass almost unchanged; low-confidence ones, which the
    victim's outlier-exposure training makes the out-of-distribution ones, are replaced by
    the misinformation posterior. y' is a convex combination, so it stays on the simplex.
    Computed in float64, released in ``release_dtype`` (float32 for half precision).

    ``xinfo(x)`` runs f̂ under no-grad in eval mode (its previous mode is restored). ``ŷ``
    must be given: the original's fallback without side information, a random vector, is
    not reproduced (it would need its own seed and makes the simulation meaningless), so
    ``perturb`` without xinfo raises. A single xinfo row is broadcast to every row.

    ``top1_preserve`` is False. Deterministic given ``(probs, xinfo)``: ``simulate == perturb``.
    """

    requires_xinfo = True
    top1_preserve = False

    def __init__(
        self,
        tau: float = 0.7,
        adaptive: bool = True,
        misinformation_model: torch.nn.Module | None = None,
    ):
        check_number(tau, "defense.tau", low=0, high=1,
                     note="the confidence threshold, or the fixed mixing weight when adaptive=false",
                     fix="set defense.tau=0.7")
        if not isinstance(adaptive, bool):
            raise ValueError(
                f"defense.adaptive={adaptive!r} is invalid: adaptive must be true or false; "
                "set defense.adaptive=true"
            )
        self.tau = float(tau)
        self.adaptive = adaptive
        if misinformation_model is not None and not isinstance(misinformation_model, torch.nn.Module):
            raise TypeError(f"AM's misinformation_model must be a torch.nn.Module, got "
                            f"{type(misinformation_model).__name__}")
        self.misinformation_model = misinformation_model  # f̂, trained by the pipeline with misinformation_loss

    def to(self, device: torch.device | str) -> "AdaptiveMisinformation":
        if self.misinformation_model is not None:
            self.misinformation_model.to(device)
        return self

    def xinfo(self, x: torch.Tensor) -> torch.Tensor:
        model = self.misinformation_model
        if model is None:
            raise ValueError(
                "AdaptiveMisinformation.xinfo needs the misinformation model: build it with "
                "misinformation_model=model (instantiate(cfg.defense, misinformation_model=model)) before querying"
            )
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                logits = model(x)
                return torch.softmax(logits.to(torch.float64), dim=1).to(logits.dtype)
        finally:
            model.train(was_training)

    def gate(self, probs: torch.Tensor) -> torch.Tensor:
        """The mixing weight h per row ([B], float64)."""
        y = probs.to(torch.float64)
        if not self.adaptive:
            return torch.full((y.shape[0],), self.tau, dtype=torch.float64, device=y.device)
        return torch.sigmoid(GATE_SLOPE * (self.tau - y.max(dim=1).values))

    def perturb(self, probs: torch.Tensor, xinfo: torch.Tensor | None = None) -> torch.Tensor:
        check_probs(probs)
        if xinfo is None:
            raise ValueError(
                "AdaptiveMisinformation needs side information: pass xinfo=defense.xinfo(x), the "
                "misinformation model's posteriors for the same inputs"
            )
        rows, k = probs.shape
        if xinfo.dim() != 2 or xinfo.shape[1] != k or xinfo.shape[0] not in (1, rows):
            raise ValueError(
                f"AdaptiveMisinformation xinfo must have shape [{rows} or 1, {k}], got "
                f"{tuple(xinfo.shape)}; pass xinfo=defense.xinfo(x) for the same inputs"
            )
        y = probs.to(torch.float64)
        yhat = xinfo.to(device=y.device, dtype=torch.float64)
        h = self.gate(probs)[:, None]
        return ((1.0 - h) * y + h * yhat).to(release_dtype(probs.dtype))

    def extra_repr(self) -> str:
        model = "set" if self.misinformation_model is not None else None
        return f"tau={self.tau}, adaptive={self.adaptive}, misinformation_model={model}"
