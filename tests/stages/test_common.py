"""stages/common.py: runtime inputs, hashes, the science config, done markers."""
from __future__ import annotations

import pytest

from modelguard.stages.common import (job_config_hash, mark_done, node_hash, runtime_inputs, science,
                                      science_groups, stage_done, victim_dir)
from modelguard.utils.cache import config_hash


def test_runtime_inputs_builds_only_what_the_callee_names():
    built = []

    def provider(name):
        return lambda: built.append(name) or name.upper()

    def collect(api, *, proxy=None, mean=None):
        return proxy, mean

    kwargs = runtime_inputs(collect, {n: provider(n) for n in ("proxy", "mean", "train_substitute")})
    assert kwargs == {"proxy": "PROXY", "mean": "MEAN"} and built == ["proxy", "mean"]

    class Defense:
        def __init__(self, eps=1.0, proxy=None):
            pass

    assert runtime_inputs(Defense, {"proxy": lambda: 1, "misinformation_model": lambda: 2}) == {"proxy": 1}


def test_node_hash_is_the_plain_hash_of_resolved_nodes(smoke):
    cfg = smoke()
    from omegaconf import OmegaConf
    assert node_hash(cfg.dataset, cfg.seed) == config_hash(OmegaConf.to_container(cfg.dataset, resolve=True), cfg.seed)
    assert len(node_hash(cfg.arch)) == 12


def test_victim_cache_key_is_stable(compose_cfg):
    """The victim cache key of the embedded default (recipe, data, arch, seed, VICTIM_SCHEME 3);
    a change here retrains every cached victim, so it is deliberate."""
    assert victim_dir(compose_cfg()).name == "6f019161ee16"


def test_science_leaves_out_run_keys_and_ignored_keys(smoke):
    cfg = smoke()
    tree = science(cfg)
    for key in ("run_keys", "paths", "wandb", "threads", "device", "progress", "fresh", "stages", "run_name"):
        assert key not in tree, key
    assert {"attack", "defense", "seed", "victim", "substitute"} <= set(tree)
    assert "loader" not in tree  # the loader settings never change results (per-item seeds)
    assert science_groups(cfg) == ["dataset", "arch", "victim", "defense", "quantize", "recover", "policy",
                                   "attack", "substitute"]


def test_done_marker_is_keyed_by_the_science_config(smoke, tmp_path):
    cfg = smoke(output_dir=tmp_path / "run")
    assert stage_done(cfg, "victim") is None
    mark_done(cfg, "victim", {"victim/test_acc": 0.5})
    assert stage_done(cfg, "victim") == {"victim/test_acc": 0.5}
    assert stage_done(smoke("threads=3", output_dir=tmp_path / "run"), "victim") == {"victim/test_acc": 0.5}
    assert stage_done(smoke("victim.epochs=1", output_dir=tmp_path / "run"), "victim") is None
    assert stage_done(smoke("fresh=true", output_dir=tmp_path / "run"), "victim") is None
    assert job_config_hash(cfg) == job_config_hash(smoke("progress=true", output_dir=tmp_path / "run"))


@pytest.mark.parametrize("override", ["attack=bayes", "defense=mad"])
def test_science_hash_sees_group_choices(smoke, override):
    assert job_config_hash(smoke(override)) != job_config_hash(smoke())


def test_victim_cache_ignores_where_the_data_lives(compose_cfg, tmp_path):
    """Moving the data root (or allowing a download) keeps the cached victim; the path names the
    victim dataset, not the on-disk bundle class."""
    a = compose_cfg("dataset=cifar10", "arch=vgg16_bn", "paths.data_dir=/data/a")
    b = compose_cfg("dataset=cifar10", "arch=vgg16_bn", "paths.data_dir=/elsewhere", "dataset.victim.download=true")
    c = compose_cfg("dataset=cifar100", "arch=vgg16_bn", "paths.data_dir=/data/a")
    assert victim_dir(a) == victim_dir(b) != victim_dir(c)
    assert victim_dir(a).parent.parent.name == "CIFAR10-vgg16_bn"
