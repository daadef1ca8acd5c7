"""Stages: plain functions ``run(cfg) -> metrics``, listed in cfg.stages and run in that order.

They talk to each other only through files: the shared caches under paths.cache_dir and the
artifacts in the run's output directory. This package is where the config stops: the stages
read ``cfg`` and hand the library (``modelguard.{dataset,arch,defense,quantize,policy,attack,
recover}``, ``engine``, ``api``) plain arguments; no library module imports ``stages``
(tests/test_layout.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig

from modelguard.stages import defense, query, substitute, victim

STAGES: dict[str, Callable[[DictConfig], dict[str, Any]]] = {
    "victim": victim.run,
    "defense": defense.run,
    "query": query.run,
    "substitute": substitute.run,
}

# The files each stage leaves behind. A stage whose done marker exists but whose outputs are
# missing or unreadable runs again (modelguard/run.py), so a marker never vouches for files
# that are gone; the defense stage leaves only its metrics.
OUTPUTS: dict[str, Callable[[DictConfig], list[Path]]] = {
    "victim": victim.outputs,
    "defense": lambda cfg: [],
    "query": query.outputs,
    "substitute": substitute.outputs,
}

# Checks that need more than the config (the data), run for the stages that will run, before
# the first of them does: a value refused there leaves every marker of the run dir alone.
PRECHECKS: dict[str, Callable[[DictConfig], None]] = {"victim": victim.precheck, "query": query.precheck}
