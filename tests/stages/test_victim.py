"""Stage victim: trains once into the shared cache, with the misinformation model."""
from __future__ import annotations

from modelguard.stages import victim
from modelguard.stages.common import victim_dir
from tests.helpers import results_only


def test_victim_stage_trains_once_and_reports(smoke):
    cfg = smoke()
    metrics = victim.run(cfg)
    directory = victim_dir(cfg)
    assert (directory / "victim.pt").exists() and (directory / "misinformation.pt").exists()
    assert 0.5 < metrics["victim/test_acc"] <= 1.0 and metrics["victim/selected_epoch"] == cfg.victim.epochs
    assert "victim/history" not in metrics
    mtime = (directory / "victim.pt").stat().st_mtime_ns
    again = victim.run(cfg)
    assert results_only(again) == results_only(metrics) and (directory / "victim.pt").stat().st_mtime_ns == mtime
    # the record says who trained it: the first call did, the second took it from the cache
    assert metrics["victim/trained_here"] is True and again["victim/trained_here"] is False
    assert again["time/victim_wait_s"] == 0.0  # nobody held the lock


def test_victim_without_misinformation_model(smoke):
    cfg = smoke("victim.misinformation=false")
    metrics = victim.run(cfg)
    assert not (victim_dir(cfg) / "misinformation.pt").exists() and "victim/misinformation_acc" not in metrics
