"""The contract every quantizer follows.

A quantizer maps clean probability vectors [B, K] to representatives (e.g. codebook
centroids) before the defense acts on them. It may keep state that grows with the queries
it answers (ModelGuard-S's codebooks).

- ``quantize(probs)`` is the online form: rows are processed in batch order and may grow
  the state.
- ``simulate(probs)`` is the frozen form an adaptive attacker uses: it never changes the state.
- ``state_dict()`` / ``load_state_dict()`` hold tensors only, so the state can be saved
  with ``torch.save`` and read back with ``weights_only=True``.
"""
from __future__ import annotations

import torch


class Quantizer:
    top1_preserve: bool = True

    def quantize(self, probs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def simulate(self, probs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
