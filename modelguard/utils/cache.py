"""Artifacts built once and shared: a stable hash of plain values for cache keys, and a
lock-protected build-once directory. Nothing here sees a config: callers hash plain values
(``OmegaConf.to_container`` them first)."""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from modelguard.utils.io import UnreadableArtifact, file_lock, load_json, save_json

log = logging.getLogger("modelguard")


def config_hash(*values: Any) -> str:
    """Short stable hash (12 hex digits) of plain values: dicts, lists, numbers, strings."""
    return hashlib.sha256(json.dumps(list(values), sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Built:
    """What :func:`cached_artifact` found or did."""

    metrics: dict[str, Any]
    built_here: bool   # this call ran ``build``; False: the entry was finished, or another job finished it meanwhile
    wait_s: float      # seconds spent waiting for the lock another job held while it built


def cached_artifact(directory: Path, build: Callable[[Path], dict[str, Any]], *, files: Sequence[str] = (),
                    verify: Callable[[Path], Any] | None = None, rebuild_unreadable: bool = False) -> Built:
    """Build an artifact directory once, even with concurrent jobs: lock, re-check, build, mark done.

    ``build(directory)`` writes its files (atomically) and returns metrics; the ``done.json``
    marker is written last, so a reader never sees a half-built artifact.

    An entry counts as finished only if ``done.json`` is readable and every name in ``files``
    exists; otherwise it is (re)built, so a deleted file or an empty marker heals. ``verify``
    reads each file back (e.g. ``load_tensors``): an unreadable one raises
    ``UnreadableArtifact`` naming it, or, with ``rebuild_unreadable``, is rebuilt. Damage is not
    rebuilt silently because the entry is shared: the caller decides (the stages: ``fresh=true``).
    """
    directory = Path(directory)
    metrics = _finished(directory, files, verify, rebuild_unreadable)
    if metrics is not None:
        return Built(metrics, built_here=False, wait_s=0.0)
    start = time.perf_counter()
    with file_lock(directory / ".lock"):
        waited = time.perf_counter() - start
        metrics = _finished(directory, files, verify, rebuild_unreadable)
        if metrics is not None:
            return Built(metrics, built_here=False, wait_s=waited)
        metrics = build(directory)
        save_json(metrics, directory / "done.json")
        return Built(metrics, built_here=True, wait_s=waited)


def _finished(directory: Path, files: Sequence[str], verify: Callable[[Path], Any] | None,
              rebuild_unreadable: bool) -> dict[str, Any] | None:
    """The metrics of a finished, intact entry; None when it must be built."""
    done = directory / "done.json"
    if not done.exists():
        return None
    try:
        metrics = load_json(done)
    except UnreadableArtifact as err:
        log.warning("%s; building %s again", err, directory)
        return None
    missing = [name for name in files if not (directory / name).is_file()]
    if missing:
        log.warning("%s has a done marker but %s is missing; building it again", directory, ", ".join(missing))
        return None
    if verify is not None:
        for name in files:
            try:
                verify(directory / name)
            except UnreadableArtifact as err:
                if not rebuild_unreadable:
                    raise
                log.warning("%s; building %s again", err, directory)
                return None
    return metrics
