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


def stream_seed(seed: int, stream: str) -> int:
    """The integer seed of the named stream ``stream`` of the run's ``seed``."""
    return (seed * 1_000_003 + zlib.crc32(stream.encode())) % 2**63


def make_generator(seed: int, stream: str) -> torch.Generator:
    """A CPU generator for one named purpose ("query", "victim-batches", ...).

    Different streams of the same seed are independent, and adding a stream never shifts
    the numbers another one draws."""
    return torch.Generator().manual_seed(stream_seed(seed, stream))


def seed_torch(seed: int, stream: str) -> None:
    """Seed torch's global RNG from a named stream, for what draws from it and takes no
    generator: module initialisation ("victim-init", "substitute-init", "shadow-<i>-init")."""
    torch.manual_seed(stream_seed(seed, stream))
