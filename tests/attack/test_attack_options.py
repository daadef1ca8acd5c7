"""Every attack option and both query policies run end to end on tiny synthetic data."""
from __future__ import annotations

import pytest

from modelguard.run import run_experiment

PLAIN = ["naive", "top1", "s4l", "smoothing", "qpi2"]
ADAPTIVE = ["ddae", "ddae_plus", "bayes"]
FAST_TABLE = ["attack.table_rows_per_query=4", "substitute.shadow_epochs=1"]


def fast(attack: str) -> list[str]:
    """Small tables, few shadows and few decoder epochs, so each adaptive attack runs in seconds."""
    return (FAST_TABLE + (["attack.table_source.count=2"] if attack == "ddae" else [])
            + ([] if attack == "bayes" else ["recover.epochs=3"]))


@pytest.mark.parametrize("attack", PLAIN)
def test_plain_attacks_run(smoke, tmp_path, attack):
    record = run_experiment(smoke(f"attack={attack}", "defense=reverse_sigmoid", output_dir=tmp_path / attack))
    expected_queries = record["attack.budget"] * record["attack.queries_per_image"]
    assert record["queries"] == expected_queries
    assert 0.0 <= record["surrogate/test_acc"] <= 1.0


@pytest.mark.parametrize("attack", ADAPTIVE)
@pytest.mark.parametrize("defense", ["mld", "reverse_sigmoid"])
def test_adaptive_attacks_report_recovery(smoke, tmp_path, attack, defense):
    record = run_experiment(smoke(f"attack={attack}", f"defense={defense}", *fast(attack),
                                  output_dir=tmp_path / f"{attack}-{defense}"))
    assert record["recover/table_rows"] > 0
    assert record["recover/l1_mean"] >= 0.0
    assert "recover/released_l1_mean" in record


def test_jbtr3_policy_runs_rounds(smoke, tmp_path):
    record = run_experiment(smoke("policy=jbtr3", "policy.seed_size=32", "defense=top1", output_dir=tmp_path / "jb"))
    assert record["queries"] == record["attack.budget"]
    assert record["jbda/rounds"] >= 2
    assert record["jbda/step_eps"] == 0.1  # top1 passes no epsilon: the attack's own radius


def test_jbtr3_with_recovery(smoke, tmp_path):
    record = run_experiment(smoke("policy=jbtr3", "policy.seed_size=64", "attack=bayes", "defense=mld",
                                  *fast("bayes"), output_dir=tmp_path / "jbb"))
    assert record["queries"] == record["attack.budget"]
    assert record["recover/table_rows"] > 0
    assert record["jbda/step_eps"] == 1.0  # the original took ModelGuard-W's eps (spec §12.1)


def test_recovery_without_table_source_is_explained(smoke, tmp_path):
    with pytest.raises(ValueError, match="attack.table_source is null"):
        run_experiment(smoke("recover=table", "defense=mld", output_dir=tmp_path / "x"))
