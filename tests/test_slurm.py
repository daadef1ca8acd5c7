"""A 4-job sweep through a real SLURM (cluster=slurm): `pytest -m slurm`.

Needs a running controller, e.g. `bash dev/local_slurm.sh start` (one node, partition
`debug`, no GPUs, accounting on so that sacct works). Skipped when `sinfo` does not answer."""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slurm


def _slurm_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=15).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _sacct_states(job_ids: set[str]) -> dict[str, str]:
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(sorted(job_ids))],
                         capture_output=True, text=True, timeout=30).stdout
    return dict(line.split("|", 1) for line in out.split() if "|" in line)


def test_sweep_through_real_slurm(tmp_path):
    if not _slurm_answers():
        pytest.skip("no SLURM controller answers `sinfo` (start one: bash dev/local_slurm.sh start)")
    root = tmp_path / "sweeps" / "slurm"
    env = {**os.environ, "MODELGUARD_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "main.py", "-m", "sweep_name=slurm", "cluster=slurm", "experiment=smoke", "threads=1",
           "defense=none,top1", "attack=naive,top1", f"hydra.sweep.dir={root}",
           "hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=null", "hydra.launcher.cpus_per_task=1",
           "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=15"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    print(f"slurm sweep: {time.perf_counter() - start:.1f}s")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]

    with open(root / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    assert {(r["choice/attack"], r["choice/defense"]) for r in rows} == {
        (a, d) for a in ("naive", "top1") for d in ("none", "top1")}

    # submitit's folders are named after the SLURM job ids: <array id> (the submission) and
    # <array id>_<task> (one per job)
    ids = {p.name for p in (root / ".submitit").iterdir() if p.is_dir() and "_" in p.name}
    assert len(ids) == 4, ids
    states: dict[str, str] = {}
    for _ in range(30):  # accounting can lag a few seconds behind the controller
        states = _sacct_states(ids)
        if len(states) == 4 and set(states.values()) == {"COMPLETED"}:
            break
        time.sleep(1)
    assert set(states) == ids and set(states.values()) == {"COMPLETED"}, states
