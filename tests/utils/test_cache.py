"""modelguard/utils/cache.py: stable hashes and build-once directories that heal."""
from __future__ import annotations

import pytest
import torch

from modelguard.utils.cache import cached_artifact, config_hash
from modelguard.utils.io import UnreadableArtifact, load_tensors, save_tensors


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

    first = cached_artifact(tmp_path / "a", build)
    assert first.metrics == {"n": 1} and first.built_here
    again = cached_artifact(tmp_path / "a", build)
    assert again.metrics == {"n": 1} and not again.built_here and again.wait_s == 0.0 and len(calls) == 1
    assert (tmp_path / "a" / "done.json").exists()


def _tensor_build(calls):
    def build(d):
        calls.append(d)
        save_tensors({"w": torch.arange(3.0)}, d / "w.pt")
        return {"n": len(calls)}
    return build


def test_missing_file_under_a_done_marker_is_rebuilt(tmp_path):
    calls = []
    cached_artifact(tmp_path / "a", _tensor_build(calls), files=["w.pt"])
    (tmp_path / "a" / "w.pt").unlink()  # e.g. a colleague cleaned the cache by hand
    again = cached_artifact(tmp_path / "a", _tensor_build(calls), files=["w.pt"])
    assert again.built_here and len(calls) == 2 and (tmp_path / "a" / "w.pt").exists()


@pytest.mark.parametrize("marker", [b"", b'{"n": '])
def test_unreadable_done_marker_is_rebuilt(tmp_path, marker):
    calls = []
    cached_artifact(tmp_path / "a", _tensor_build(calls), files=["w.pt"])
    (tmp_path / "a" / "done.json").write_bytes(marker)
    again = cached_artifact(tmp_path / "a", _tensor_build(calls), files=["w.pt"])
    assert again.built_here and again.metrics == {"n": 2}


def test_unreadable_file_is_named_or_rebuilt_on_request(tmp_path):
    calls = []
    cached_artifact(tmp_path / "a", _tensor_build(calls), files=["w.pt"])
    path = tmp_path / "a" / "w.pt"
    path.write_bytes(path.read_bytes()[:40])  # truncated
    # without verify the marker is trusted: the damage shows where the file is read
    assert not cached_artifact(tmp_path / "a", _tensor_build(calls), files=["w.pt"]).built_here
    with pytest.raises(UnreadableArtifact, match=r"w\.pt cannot be read: it is empty, truncated or corrupt"):
        cached_artifact(tmp_path / "a", _tensor_build(calls), files=["w.pt"], verify=load_tensors)
    assert len(calls) == 1 and path.stat().st_size == 40  # nothing rebuilt, nothing overwritten
    healed = cached_artifact(tmp_path / "a", _tensor_build(calls), files=["w.pt"], verify=load_tensors,
                             rebuild_unreadable=True)
    assert healed.built_here and torch.equal(load_tensors(path)["w"], torch.arange(3.0))
