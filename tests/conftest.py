"""Shared fixtures: compose the real conf/ through Hydra's Compose API."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")

torch.set_num_threads(1)  # tests run beside other processes; one thread avoids oversubscription


@pytest.fixture(scope="session")
def pipeline_rows() -> Callable[[int, str], torch.Tensor]:
    """pipeline_rows(K, family) -> the rows of ``tests.realistic_rows.pipeline_families(K)``
    (built once per K per session; callers must not modify them)."""
    from tests.realistic_rows import pipeline_families

    cache: dict[int, dict[str, torch.Tensor]] = {}

    def get(K: int, family: str) -> torch.Tensor:
        if K not in cache:
            cache[K] = pipeline_families(K)
        return cache[K][family]

    return get


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """compose_cfg("defense=mld", ...) -> a job config whose outputs and caches live in tmp_path."""

    def _compose(*overrides: str, output_dir: Path | None = None) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
            cfg = compose(config_name="main", overrides=list(overrides))
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir or tmp_path / "run")
            cfg.paths.cache_dir = str(tmp_path / "cache")
        return cfg

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture
def smoke(compose_cfg) -> Callable[..., DictConfig]:
    """A seconds-long experiment (synthetic data, MLP) plus any overrides."""
    return lambda *overrides, **kw: compose_cfg("experiment=smoke", *overrides, **kw)
