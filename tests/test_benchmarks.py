"""The GPU smoke benchmark runs on the CPU too (issue 10 item 5: `--device cpu`)."""
from __future__ import annotations

import json
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
    assert {(m["model"], m["size"]) for m in figures["models"]} == {("resnet50", 224), ("vgg16_bn", 32)}
    assert all(m["train_img_s"] > 0 and m["infer_img_s"] > m["train_img_s"] for m in figures["models"])
    assert figures["mld"]["device_rows_s"] > 0 and "ModelGuard-W K=256" in done.stdout
