"""Identity recovery: the attacker trains on the answers as released."""
from __future__ import annotations

import torch

from modelguard.recover.base import Recoverer


class NoRecovery(Recoverer):
    needs_table = False

    def fit(self, clean: torch.Tensor, perturbed: torch.Tensor) -> "NoRecovery":
        return self

    def recover(self, released: torch.Tensor) -> torch.Tensor:
        return released
