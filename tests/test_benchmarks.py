"""The GPU smoke benchmark runs on the CPU too (issue 10 item 5: `--device cpu`)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_smoke_runs_on_cpu_and_reports_every_figure(tmp_path):
    out = tmp_path / "figures.json"
    done = subprocess.run([sys.executable, "benchmarks/gpu_smoke.py", "--device", "cpu", "--quick", "--threads", "1",
                           "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert {(m["model"], m["size"]) for m in figures["models"]} == {("resnet50", 224), ("vgg16_bn", 32), ("alexnet", 224), ("alexnet", 32)}
    assert all(m["train_img_s"] > 0 and m["infer_img_s"] > m["train_img_s"] for m in figures["models"])
    assert figures["mld"]["device_rows_s"] > 0 and "ModelGuard-W K=256" in done.stdout


def _table_cost(*args: str, env: dict | None = None) -> str:
    done = subprocess.run([sys.executable, "benchmarks/table_cost.py", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=None if env is None else {**os.environ, **env})
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_table_cost_counts_the_launchers_jobs_from_the_recipes(tmp_path):
    """The cost of the CIFAR-10 table, counted by hand from the grid (README, "Paper grid"): the
    victim 100 epochs x 50,000 images x 3 (victim, outliers, misinformation model); 39 KnockoffNets
    jobs x 30 epochs x 50,000 and 8 S4L jobs at five times that; 31 JBDA-TR jobs x 30 epochs x
    (1,000 + 4,000 + 16,000 + 50,000) plus 8 PGD steps on 49,000 synthetic images. Shadows: 20 x 5
    epochs x TinyImageNet's 100,000 images x 10/200 classes, and 20 x 50,000 answers per D-DAE job."""
    victim = 100 * 50_000 * 3
    knockoff = 39 * 30 * 50_000 + 8 * 5 * 30 * 50_000
    jbda = 31 * (30 * 71_000 + 8 * 49_000)
    train = victim + knockoff + jbda
    shadow_train, shadow_infer_queries = 20 * 5 * 100_000 * 10 // 200, 14 * 20 * 50_000
    shadow_infer = shadow_infer_queries + 20 * 5 * 10_000 * 10 // 200
    figures = {"device": "cpu", "device_name": "test", "mld": {}, "models": [
        {"model": m, "size": s, "amp": False, "train_img_s": t, "infer_img_s": i}
        for m, s, t, i in (("vgg16_bn", 32, 1000.0, 4000.0), ("alexnet", 32, 5000.0, 20000.0))]}
    (tmp_path / "f.json").write_text(json.dumps(figures))
    out = _table_cost("cifar10", "--throughput", str(tmp_path / "f.json"), "--jobs")
    row = next(line for line in out.splitlines() if line.startswith("| cifar10"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "78"
    assert cells[2] == f"{train / 1e6:.1f} M" == "211.7 M"
    assert cells[4] == f"{shadow_train / 1e6:.1f} M" and cells[5] == f"{shadow_infer / 1e6:.1f} M"
    infer = float(cells[3].removesuffix(" M")) * 1e6
    hours = (train / 1000 + infer / 4000 + shadow_train / 5000 + shadow_infer / 20000) / 3600
    assert float(cells[6].replace(",", "")) == pytest.approx(hours, abs=0.06)
    # --jobs lists every job once: the victims' job and the 78 of the grid
    assert sum(1 for line in out.splitlines() if line.startswith("  ")) == 79


def test_table_cost_refuses_throughputs_without_the_tables_model(tmp_path):
    figures = {"device": "cpu", "device_name": "test", "mld": {}, "models": [
        {"model": "resnet50", "size": 224, "amp": False, "train_img_s": 1.0, "infer_img_s": 2.0}]}
    (tmp_path / "f.json").write_text(json.dumps(figures))
    done = subprocess.run([sys.executable, "benchmarks/table_cost.py", "cifar10", "--throughput",
                           str(tmp_path / "f.json")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "no vgg16_bn at 32 px" in done.stderr


def test_jbda_rounds_follow_the_policy_loop():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from table_cost import jbda_rounds
    finally:
        sys.path.pop(0)
    assert jbda_rounds(1000, 3, 50_000) == [1000, 4000, 16000, 50000]
    assert jbda_rounds(1000, 3, 500) == [500]
    assert jbda_rounds(10, 1, 40) == [10, 20, 40]


def test_readme_cost_table_is_what_table_cost_prints():
    """README's "Cost" table must be regenerated when the presets or the launcher change."""
    printed = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
               for line in _table_cost().splitlines() if line.startswith("| ") and " px)" in line}
    readme = (REPO / "README.md").read_text()
    documented = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
                  for line in readme.splitlines() if line.startswith("| ") and " px) | 78 |" in line}
    assert printed.keys() == documented.keys() and len(printed) == 4
    for table, cells in printed.items():
        assert documented[table][:6] == cells, table


def test_table_cost_counts_every_seed_of_the_launcher():
    """SEEDS="0 1" doubles every job and trains a second set of shadows (one per seed)."""
    row = next(line for line in _table_cost("cifar10", env={"SEEDS": "0 1"}).splitlines()
               if line.startswith("| cifar10"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:6] == ["156", "423.4 M", "120.2 M", "1.0 M", "28.1 M"]
