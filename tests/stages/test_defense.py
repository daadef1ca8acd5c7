"""Stage defense: utility of the defended API on the victim's test set."""
from __future__ import annotations

import pytest

from modelguard.stages import defense, victim


def test_no_defense_keeps_everything(smoke):
    cfg = smoke("defense=none")
    victim.run(cfg)
    metrics = defense.run(cfg)
    assert metrics["defense/protected_acc"] == metrics["defense/clean_acc"]
    assert metrics["defense/l1_max"] == 0.0 and metrics["defense/top1_kept"] == 1.0


def test_mld_stays_within_eps_and_keeps_top1(smoke):
    cfg = smoke("defense=mld", "defense.eps=0.5")
    victim.run(cfg)
    metrics = defense.run(cfg)
    assert metrics["defense/l1_max"] <= 0.5 + 1e-5 and metrics["defense/top1_kept"] == 1.0


def test_defense_stage_needs_the_victim(smoke):
    with pytest.raises(FileNotFoundError, match="run the victim stage first"):
        defense.run(smoke())
