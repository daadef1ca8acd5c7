"""Stage substitute (and stages/training.py): the attacker's copy from the saved transfer set."""
from __future__ import annotations

import pytest
import torch

from modelguard.stages import query, substitute, victim
from modelguard.stages.training import substitute_optimizer


def test_substitute_stage_trains_from_the_transfer_set(smoke, tmp_path):
    cfg = smoke("defense=none", output_dir=tmp_path / "run")
    victim.run(cfg)
    query.run(cfg)
    metrics = substitute.run(cfg)
    assert (tmp_path / "run" / "substitute.pt").exists()
    assert metrics["surrogate/train_size"] == cfg.attack.budget
    assert metrics["surrogate/best_test_acc"] >= metrics["surrogate/test_acc"]
    assert metrics["surrogate/selected_epoch"] == cfg.substitute.epochs


def test_substitute_stage_needs_the_transfer_set(smoke, tmp_path):
    cfg = smoke(output_dir=tmp_path / "empty")
    victim.run(cfg)
    with pytest.raises(FileNotFoundError, match="run the query stage first"):
        substitute.run(cfg)


def test_policy_sets_the_substitute_weight_decay(smoke):
    param = [torch.nn.Parameter(torch.zeros(1))]
    wd = lambda *o: substitute_optimizer(smoke(*o))(params=param).param_groups[0]["weight_decay"]  # noqa: E731
    assert (wd(), wd("policy=jbtr3"), wd("policy=jbtr3", "policy.substitute_weight_decay=0.1")) == (0.0, 5e-4, 0.1)
