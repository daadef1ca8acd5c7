"""modelguard/utils/cache.py: stable hashes and build-once directories."""
from __future__ import annotations

from modelguard.utils.cache import cached_artifact, config_hash


def test_config_hash_is_stable_and_order_free_in_dicts():
    assert config_hash({"a": 1, "b": [1, 2]}, 3) == config_hash({"b": [1, 2], "a": 1}, 3)
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    assert len(config_hash(1)) == 12


def test_cached_artifact_builds_once(tmp_path):
    calls = []

    def build(d):
        calls.append(d)
        (d / "x.txt").write_text("x")
        return {"n": 1}

    assert cached_artifact(tmp_path / "a", build) == {"n": 1}
    assert cached_artifact(tmp_path / "a", build) == {"n": 1} and len(calls) == 1
    assert (tmp_path / "a" / "done.json").exists()
