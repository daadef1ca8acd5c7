"""Artifacts built once and shared: a stable hash of plain values for cache keys, and a
lock-protected build-once directory. Nothing here sees a config: callers hash plain values
(``OmegaConf.to_container`` them first)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from modelguard.utils.io import file_lock, load_json, save_json


def config_hash(*values: Any) -> str:
    """Short stable hash (12 hex digits) of plain values: dicts, lists, numbers, strings."""
    return hashlib.sha256(json.dumps(list(values), sort_keys=True, default=str).encode()).hexdigest()[:12]


def cached_artifact(directory: Path, build: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """Build an artifact directory once, even with concurrent jobs: lock, re-check, build, mark done.

    ``build(directory)`` writes its files (atomically) and returns metrics; the ``done.json``
    marker is written last, so a reader never sees a half-built artifact."""
    done = directory / "done.json"
    if done.exists():
        return load_json(done)
    with file_lock(directory / ".lock"):
        if done.exists():
            return load_json(done)
        metrics = build(directory)
        save_json(metrics, done)
        return metrics
