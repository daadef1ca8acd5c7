"""Small shared builders for unit tests: a tiny victim, a defended API, a pool of images."""
from __future__ import annotations

import torch

from modelguard.api import DefendedAPI
from modelguard.arch.small import mlp
from modelguard.defense.none import NoDefense


def tiny_model(k: int = 4, seed: int = 0, hidden: int = 16) -> torch.nn.Module:
    """An MLP on [1, 8, 8] images with mean 0.5 and std 0.25, seeded."""
    torch.manual_seed(seed)
    return mlp(k, 1, 8, [0.5], [0.25], hidden=hidden)


def tiny_api(budget=None, defense=None, k: int = 4) -> DefendedAPI:
    return DefendedAPI(tiny_model(k), defense or NoDefense(), budget=budget)


def pool(n: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def results_only(record: dict) -> dict:
    """A metrics record without what describes the job's own work rather than its results:
    wall times (time/*, and any other key in seconds, *_s: recover/table_build_s) and whether
    this job trained the shared victim (victim/trained_here)."""
    return {k: v for k, v in record.items()
            if not k.startswith("time/") and not k.endswith("_s") and k != "victim/trained_here"}
