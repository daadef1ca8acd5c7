"""Identity quantizer: the defense sees the clean probabilities."""
from __future__ import annotations

import torch

from modelguard.quantize.base import Quantizer


class NoQuantizer(Quantizer):
    def quantize(self, probs: torch.Tensor) -> torch.Tensor:
        return probs

    def simulate(self, probs: torch.Tensor) -> torch.Tensor:
        return probs
