"""Seeding: one global seed applied once, and named generators for every random component."""
from __future__ import annotations

import os
import random
import zlib

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, numpy and torch (CPU and CUDA) once, and set torch's deterministic mode.

    ``deterministic`` (docs/determinism.md) asks torch for deterministic kernels; an op
    without one warns instead of failing (``warn_only``). cuBLAS needs a fixed workspace for
    deterministic results, read when CUDA first creates a cuBLAS handle, so it is set here,
    before any model reaches the GPU, unless the user set it. The mode is set either way, so
    a process that runs several experiments does not carry it from one into the next."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


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
