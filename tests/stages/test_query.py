"""Stage query: the transfer set, the API's budget, and the policy's runtime inputs."""
from __future__ import annotations

import torch
from hydra.utils import instantiate

from modelguard.stages import query, victim
from modelguard.stages.common import load_data
from modelguard.stages.query import policy_inputs
from modelguard.stages.transfer import load_transfer
from modelguard.utils.io import load_tensors


def test_query_stage_writes_the_transfer_set(smoke, tmp_path):
    cfg = smoke("attack=smoothing", "+view@attack.augment=shift", output_dir=tmp_path / "run")
    victim.run(cfg)
    metrics = query.run(cfg)
    assert metrics["queries"] == 3 * cfg.attack.budget and metrics["query/transfer_size"] == cfg.attack.budget
    transfer = load_tensors(tmp_path / "run" / "transfer.pt")
    assert set(transfer) == {"pool_index", "labels", "released", "clean"}
    pool = load_data(cfg).query_pool
    images, labels = load_transfer(tmp_path / "run" / "transfer.pt", pool).tensors
    assert len(images) == len(labels) == cfg.attack.budget
    assert torch.equal(images, pool.tensors[0][transfer["pool_index"]])


def test_jbda_transfer_keeps_synthetic_images(smoke, tmp_path):
    cfg = smoke("policy=jbtr3", "policy.seed_size=32", "defense=top1", output_dir=tmp_path / "run")
    victim.run(cfg)
    metrics = query.run(cfg)
    assert metrics["queries"] == cfg.attack.budget and metrics["jbda/rounds"] >= 2
    transfer = load_tensors(tmp_path / "run" / "transfer.pt")
    assert (transfer["pool_index"] < 0).sum() == len(transfer["inputs"]) > 0


def test_policies_get_only_the_inputs_they_name(smoke):
    cfg = smoke()
    victim.run(cfg)
    data = load_data(cfg)
    attack = instantiate(cfg.attack)
    knockoff = instantiate(cfg.policy)
    assert set(policy_inputs(cfg, data, attack, knockoff, api=None)) == {"dataset_view", "pool_augmented", "loader"}
    assert policy_inputs(cfg, data, attack, knockoff, api=None)["pool_augmented"] is None  # in memory: none
    jbtr3 = instantiate(smoke("policy=jbtr3").policy)
    from modelguard.stages.defended import build_api
    inputs = policy_inputs(cfg, data, attack, jbtr3, build_api(cfg, data))
    assert set(inputs) == {"train_substitute", "relabel", "defense_eps", "mean", "std", "loader"}
    assert inputs["defense_eps"] == 1.0 and inputs["mean"] == tuple(data.mean)


def test_original_jbda_eps_is_mad_and_modelguard_w_only(compose_cfg):
    eps = {name: instantiate(compose_cfg(f"defense={name}").defense).original_jbda_eps()
           for name in ("mld", "mad", "am", "random_noise", "none")}
    assert eps == {"mld": 1.0, "mad": 1.0, "am": None, "random_noise": None, "none": None}
