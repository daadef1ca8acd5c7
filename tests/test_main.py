"""End-to-end runs of the pipeline, shrunk to seconds with experiment=smoke."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modelguard.run import run_experiment
from modelguard.utils.io import load_tensors
from tests.helpers import results_only

REPO = Path(__file__).resolve().parents[1]
REQUIRED = ["victim/test_acc", "defense/protected_acc", "defense/l1_mean", "defense/l1_max",
            "surrogate/test_acc", "surrogate/fidelity", "queries", "seed"]


def test_smoke_pipeline_writes_every_metric(smoke, tmp_path):
    cfg = smoke()
    record = run_experiment(cfg, {"defense": "mld", "attack": "naive"})
    written = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    for key in REQUIRED:
        assert key in written, key
    assert written["choice/defense"] == "mld"  # the default: ModelGuard-W, eps 1.0
    assert written["queries"] == cfg.attack.budget
    assert written["victim/test_acc"] > 0.5  # 4 separable classes
    assert written["defense/protected_acc"] == pytest.approx(written["victim/test_acc"])
    assert 0.0 < written["defense/l1_max"] <= cfg.defense.eps + 1e-6
    assert record["surrogate/test_acc"] == written["surrogate/test_acc"]


def test_same_seed_same_metrics_and_rerun_reuses(smoke, tmp_path):
    first = run_experiment(smoke(output_dir=tmp_path / "a"))
    again = run_experiment(smoke(output_dir=tmp_path / "b"))
    strip = results_only
    assert strip(first) == strip(again)
    # the same run directory again: every stage is reused, so nothing is recomputed
    marker = tmp_path / "a" / "stages" / "substitute.json"
    before = marker.stat().st_mtime_ns
    third = run_experiment(smoke(output_dir=tmp_path / "a"))
    assert marker.stat().st_mtime_ns == before
    assert strip(third) == strip(first)


def test_other_seed_differs(smoke, tmp_path):
    run_experiment(smoke(output_dir=tmp_path / "a"))
    run_experiment(smoke("seed=1", output_dir=tmp_path / "b"))
    a, b = (load_tensors(tmp_path / d / "transfer.pt") for d in "ab")
    assert not torch.equal(a["pool_index"], b["pool_index"])  # other data, other queries
    assert not torch.allclose(a["released"], b["released"])


def test_changed_config_recomputes_stage(smoke, tmp_path):
    run_experiment(smoke(output_dir=tmp_path / "a"))
    record = run_experiment(smoke("attack.budget=128", output_dir=tmp_path / "a"))
    assert record["queries"] == 128


def test_victim_cache_shared_between_runs(smoke, tmp_path):
    run_experiment(smoke(output_dir=tmp_path / "a"))
    victims = list((tmp_path / "cache" / "victims").rglob("victim.pt"))
    assert len(victims) == 1
    mtime = victims[0].stat().st_mtime_ns
    run_experiment(smoke("attack.budget=100", output_dir=tmp_path / "b"))
    assert victims[0].stat().st_mtime_ns == mtime


def test_bad_stage_name_is_named(smoke):
    with pytest.raises(ValueError, match="nonsense"):
        run_experiment(smoke("stages=[victim,nonsense]"))


def test_budget_larger_than_pool_is_explained(smoke):
    with pytest.raises(ValueError, match="attack.budget=100000"):
        run_experiment(smoke("attack.budget=100000"))


def _main(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, MODELGUARD_CACHE=str(tmp_path / "cache"))
    return subprocess.run([sys.executable, "main.py", *args, f"hydra.run.dir={tmp_path}/run"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_cli_unknown_option_exits_nonzero_and_lists_choices(tmp_path):
    result = _main("defense=nonexistent", tmp_path=tmp_path)
    assert result.returncode != 0
    assert "nonexistent" in result.stderr and "none" in result.stderr


def test_cli_bad_value_exits_nonzero_and_names_it(tmp_path):
    result = _main("experiment=smoke", "attack.query_batch_size=0", tmp_path=tmp_path)
    assert result.returncode != 0
    assert "attack.query_batch_size=0" in result.stderr


def test_cli_smoke_run_prints_summary(tmp_path):
    result = _main("experiment=smoke", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "surrogate/test_acc" in result.stdout
    assert (tmp_path / "run" / "metrics.json").exists()


def test_cli_failure_keeps_earlier_results(tmp_path):
    assert _main("experiment=smoke", tmp_path=tmp_path).returncode == 0
    before = (tmp_path / "run" / "metrics.json").read_text()
    result = _main("experiment=smoke", "attack.budget=0", tmp_path=tmp_path)  # same run dir, now failing
    assert result.returncode != 0 and "attack.budget=0" in result.stderr
    assert (tmp_path / "run" / "metrics.json").read_text() == before
    assert "failed" in (tmp_path / "run" / "failure.json").read_text()


@pytest.mark.parametrize("knob", ["amp", "channels_last", "cudnn_benchmark", "deterministic"])
def test_speed_switches_must_be_booleans(smoke, knob):
    with pytest.raises(ValueError, match=f"{knob}='maybe' is invalid: {knob} must be true or false; set {knob}="):
        run_experiment(smoke(f"{knob}=maybe"))
