"""The contract every recoverer follows.

A recoverer learns, from a table of (clean, perturbed) pairs that the attacker simulated
offline, a map from released vectors back to clean ones.

- ``fit(clean, perturbed)``: both [N, K] float tensors, row i of ``perturbed`` is the
  defense's simulated answer for row i of ``clean``.
- ``recover(released)``: [B, K] -> [B, K] estimates of the clean posteriors.
- ``needs_table`` is False for the identity, so the pipeline skips building a table.
"""
from __future__ import annotations

import torch


class Recoverer:
    needs_table: bool = True

    def fit(self, clean: torch.Tensor, perturbed: torch.Tensor) -> "Recoverer":
        raise NotImplementedError

    def recover(self, released: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
