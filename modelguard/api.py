"""The defended prediction API: victim -> quantizer -> defense. The only thing an attack calls."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from modelguard.dataset.loading import IN_PROCESS, LoaderSettings, as_dataset, read_batches
from modelguard.defense.base import Defense
from modelguard.quantize.base import Quantizer
from modelguard.quantize.none import NoQuantizer


class BudgetExceeded(RuntimeError):
    pass


class DefendedAPI:
    """Answers batches of images with released probability vectors and counts every query.

    Args:
        victim: the classifier (kept in eval mode, never exposed to the attacker's gradients).
        defense: perturbs the clean probabilities (after the quantizer, as in ModelGuard-S).
        quantizer: maps clean probabilities to codebook representatives first.
        budget: maximum number of images answered; None means unlimited (evaluation).
    """

    def __init__(self, victim: nn.Module, defense: Defense, quantizer: Quantizer | None = None,
                 budget: int | None = None, device: torch.device | str = "cpu"):
        self.quantizer = quantizer if quantizer is not None else NoQuantizer()
        if defense.requires_xinfo and not isinstance(self.quantizer, NoQuantizer):
            raise ValueError(f"quantize={type(self.quantizer).__name__} cannot wrap {type(defense).__name__}: "
                             "the quantizer's offline form has no per-input information to pass it. "
                             "Use quantize=none with this defense, or a defense such as defense=none")
        self.victim = victim.to(device).eval()
        self.defense = defense.to(device)
        self.budget = budget
        self.device = device
        self.queries = 0

    @property
    def top1_preserve(self) -> bool:
        return self.defense.top1_preserve and self.quantizer.top1_preserve

    @property
    def remaining(self) -> int | None:
        return None if self.budget is None else self.budget - self.queries

    @torch.no_grad()
    def clean(self, x: torch.Tensor) -> torch.Tensor:
        """The victim's undefended posteriors (for evaluation and the spec's oracle prior)."""
        return F.softmax(self.victim(x.to(self.device)).float(), dim=1)

    def xinfo(self, x: torch.Tensor) -> torch.Tensor | None:
        return self.defense.xinfo(x.to(self.device)) if self.defense.requires_xinfo else None

    def side_information(self, inputs: torch.Tensor | Dataset, batch_size: int = 512,
                         loader: LoaderSettings = IN_PROCESS) -> torch.Tensor | None:
        """The defense's per-input information for every image of ``inputs`` (images, or a dataset
        whose items start with one; on the CPU), or None when the defense needs none: what the
        offline simulation passes to ``simulate``."""
        if not self.defense.requires_xinfo:
            return None
        return torch.cat([self.xinfo(batch[0]).cpu()
                          for batch in read_batches(as_dataset(inputs), None, batch_size, settings=loader)])

    @torch.no_grad()
    def query(self, x: torch.Tensor, return_clean: bool = False):
        """Released probabilities for the images ``x`` [B, C, H, W] (and the clean ones)."""
        n = len(x)
        if self.budget is not None and self.queries + n > self.budget:
            raise BudgetExceeded(f"query of {n} images would exceed the budget of {self.budget} "
                                 f"({self.queries} used); raise attack.budget")
        self.queries += n
        clean = self.clean(x)
        released = self.defense.perturb(self.quantizer.quantize(clean), self.xinfo(x))
        return (released, clean) if return_clean else released

    def query_all(self, x: torch.Tensor | Dataset, batch_size: int,
                  loader: LoaderSettings = IN_PROCESS) -> tuple[torch.Tensor, torch.Tensor]:
        """Released and clean answers (float32, CPU) for every image of ``x`` (images, or a dataset
        whose items start with one), in order, in batches."""
        released, clean = [], []
        for batch in read_batches(as_dataset(x), None, batch_size, settings=loader):
            r, c = self.query(batch[0], return_clean=True)
            released.append(r.cpu().float())
            clean.append(c.cpu().float())
        return torch.cat(released), torch.cat(clean)

    def simulate(self, clean: torch.Tensor, xinfo: torch.Tensor | None = None) -> torch.Tensor:
        """Offline form: what the API would release for clean posteriors (frozen quantizer)."""
        return self.defense.simulate(self.quantizer.simulate(clean), xinfo)
