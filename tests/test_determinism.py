"""Same seed, same config, same results on CPU (docs/determinism.md), across processes.

Two ``python main.py`` processes with their own caches (each trains its own victim) and
different ``PYTHONHASHSEED`` (so nothing may depend on set or dict-of-str order), side by side."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.helpers import results_only

REPO = Path(__file__).resolve().parents[1]
# every stage, a recovering attack (the Dirichlet table and its lookup) and MAD (its proxy)
ARGS = ("experiment=smoke", "attack=bayes", "defense=mad", "threads=1")


def _launch(root: Path, hash_seed: str) -> subprocess.Popen:
    env = {**os.environ, "MODELGUARD_CACHE": str(root / "cache"), "PYTHONHASHSEED": hash_seed, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "main.py", *ARGS, f"hydra.run.dir={root / 'run'}"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_same_seed_and_config_give_identical_metrics_and_artifacts(tmp_path):
    procs = [_launch(tmp_path / name, seed) for name, seed in (("a", "1"), ("b", "2"))]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    a, b = (json.loads((tmp_path / name / "run" / "metrics.json").read_text()) for name in "ab")
    assert "recover/l1_mean" in a and "surrogate/test_acc" in a
    assert results_only(a) == results_only(b)  # every metric and knob, timings aside
    assert {k for k in a if k not in results_only(a)} == {k for k in a if k.startswith("time/")} | {
        "victim/trained_here", "recover/table_build_s"}
    for name in ("transfer.pt", "substitute.pt"):
        assert (tmp_path / "a" / "run" / name).read_bytes() == (tmp_path / "b" / "run" / name).read_bytes(), name
    va, vb = (next((tmp_path / n / "cache").rglob("victim.pt")) for n in "ab")
    state_a, state_b = torch.load(va, weights_only=True), torch.load(vb, weights_only=True)
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
