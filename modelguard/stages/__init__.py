"""Stages: plain functions ``run(cfg) -> metrics``, listed in cfg.stages and run in that order.

They talk to each other only through files: the shared caches under paths.cache_dir and the
artifacts in the run's output directory.

Each stage module is imported when its stage first runs, not with this package: attack modules
import ``modelguard.stages.common``, and the query stage imports the attack modules, so
importing every stage here made ``import modelguard.attack.shadows`` (or ``table_build``)
on its own a circular import."""
from __future__ import annotations

from importlib import import_module
from typing import Any, Callable

from omegaconf import DictConfig

STAGE_NAMES = ("victim", "defense", "query", "substitute")


def _runner(name: str) -> Callable[[DictConfig], dict[str, Any]]:
    def run(cfg: DictConfig) -> dict[str, Any]:
        return import_module(f"modelguard.stages.{name}").run(cfg)

    run.__name__ = run.__qualname__ = f"{name}_run"
    return run


STAGES: dict[str, Callable[[DictConfig], dict[str, Any]]] = {name: _runner(name) for name in STAGE_NAMES}
