"""Device names from the config ("cpu", "cuda", "cuda:1", "auto") to torch devices."""
from __future__ import annotations

import torch


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` → CUDA when available, else CPU; a CUDA device without CUDA is refused clearly."""
    wanted = str(name)
    if wanted == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if wanted.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={wanted} was asked for but CUDA is not available; use device=cpu or device=auto")
    try:
        return torch.device(wanted)
    except RuntimeError as err:
        raise ValueError(f"device={wanted!r} is not a device torch knows; use device=cpu, cuda, cuda:N or auto") from None
