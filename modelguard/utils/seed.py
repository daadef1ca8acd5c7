"""Seeding: one global seed applied once, and named generators for every random component."""
from __future__ import annotations

import random
import zlib

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def make_generator(seed: int, stream: str) -> torch.Generator:
    """A CPU generator for one named purpose ("query-order", "substitute-init", ...).

    Different streams of the same seed are independent, and adding a stream never shifts
    the numbers another one draws."""
    return torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(stream.encode())) % 2**63)
