"""Damaged or missing artifacts (issue 11): a stage whose marker exists but whose outputs are
gone or unreadable runs again; a damaged file in the shared cache is named with the fix, and
``fresh=true`` rebuilds it; a pickle is refused without running it. Through the command line
(in-process, tests/cli.py), on copies of one finished smoke run."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from modelguard.stages.common import victim_dir
from tests.cli import fingerprint, run_cli
from tests.helpers import results_only

import main as entry


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("original")
    with pytest.MonkeyPatch.context() as m:
        m.setenv("MODELGUARD_CACHE", str(root / "cache"))
        assert entry.cli(["experiment=smoke", f"hydra.run.dir={root / 'run'}"]) == 0
    return root


@pytest.fixture
def job(original, tmp_path, capsys, monkeypatch):
    """A private copy of the finished run and its cache; job.run(*args) reruns its command."""
    shutil.copytree(original, tmp_path / "job")

    class Job:
        root = tmp_path / "job"
        run_dir = root / "run"
        cache = root / "cache"
        victim = next((root / "cache" / "victims").rglob("done.json")).parent
        metrics = json.loads((run_dir / "metrics.json").read_text())

        @staticmethod
        def run(*args: str):
            return run_cli(capsys, monkeypatch, "experiment=smoke", *args, f"hydra.run.dir={Job.run_dir}",
                           cache=Job.cache)

        @staticmethod
        def marker(name: str) -> bytes:
            return (Job.run_dir / "stages" / f"{name}.json").read_bytes()

        @staticmethod
        def results() -> dict:
            return results_only(json.loads((Job.run_dir / "metrics.json").read_text()))

    return Job


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


class Payload:
    """Pickles to a call of os.system: loading it unsafely would create ``self.witness``."""

    def __init__(self, witness: Path):
        self.witness = witness

    def __reduce__(self):
        return (os.system, (f"touch {self.witness}",))


@pytest.mark.parametrize("what", ["the whole entry", "victim.pt"])
def test_missing_cached_victim_under_a_marker_is_trained_again(job, what):
    """The issue's case: the victim marker makes the stage skip, the cache lost the victim. The
    advice was "run the victim stage first"; now the victim stage runs again by itself."""
    shutil.rmtree(job.victim) if what == "the whole entry" else (job.victim / "victim.pt").unlink()
    query, substitute = job.marker("query"), job.marker("substitute")
    result = job.run()
    assert result.rc == 0, result.err
    assert "stage victim: its done marker exists but" in result.out and "is missing; running it again" in result.out
    assert (job.victim / "victim.pt").is_file()
    assert job.results() == results_only(job.metrics)  # the same victim again (CPU is deterministic)
    assert job.marker("query") == query and job.marker("substitute") == substitute  # later stages reused


@pytest.mark.parametrize("name", ["victim.pt", "misinformation.pt"])
def test_truncated_cached_model_is_named_and_fresh_rebuilds_it(job, name):
    truncate(job.victim / name)
    before = fingerprint(job.run_dir, job.cache)
    result = job.run()
    assert result.rc == 2
    message = result.message
    assert f"{job.victim / name} cannot be read: it is empty, truncated or corrupt" in message
    assert "shared cache entry" in message and "rerun with fresh=true" in message
    assert fingerprint(job.run_dir, job.cache) == before  # nothing rebuilt behind the user's back
    healed = job.run("fresh=true")
    assert healed.rc == 0, healed.err
    torch.load(job.victim / name, weights_only=True)  # readable again
    assert job.results() == results_only(job.metrics)


@pytest.mark.parametrize("name", ["victim.pt", "misinformation.pt"])
def test_pickle_in_the_cache_is_refused_and_never_run(job, name, tmp_path):
    witness = tmp_path / "payload-ran"
    torch.save({"weight": Payload(witness)}, job.victim / name)
    before = fingerprint(job.run_dir, job.cache)
    result = job.run()
    assert result.rc == 2
    message = result.message
    assert f"{job.victim / name} is not a plain tensor file" in message and "refused" in message
    assert "posix.system" in message  # what it would have called
    assert "weights_only" not in result.err + result.out  # torch's advice to unpickle is not passed on
    assert not witness.exists()
    assert fingerprint(job.run_dir, job.cache) == before


def test_damaged_transfer_set_reruns_the_query_stage(job, tmp_path):
    transfer = job.run_dir / "transfer.pt"
    original = transfer.read_bytes()
    substitute = job.marker("substitute")
    truncate(transfer)
    result = job.run()
    assert result.rc == 0, result.err
    assert f"{transfer} cannot be read" in result.out and "running it again" in result.out
    assert transfer.read_bytes() == original  # the same transfer set, byte for byte
    assert job.marker("substitute") == substitute
    # a pickle planted there is refused (never run) and replaced the same way
    witness = tmp_path / "payload-ran"
    torch.save({"labels": Payload(witness)}, transfer)
    assert job.run().rc == 0 and not witness.exists() and transfer.read_bytes() == original


def test_damaged_transfer_set_without_its_stage_is_named(job):
    """stages=[substitute] alone cannot rerun the query stage: the message names the file and the fix."""
    truncate(job.run_dir / "transfer.pt")
    (job.run_dir / "stages" / "substitute.json").unlink()
    result = job.run("stages=[substitute]")
    assert result.rc == 2
    assert f"{job.run_dir / 'transfer.pt'} cannot be read" in result.message
    assert "run the query stage again to rewrite it (stages=[query,substitute], or fresh=true)" in result.message


@pytest.mark.parametrize("marker", ["stages/query.json", "cache done.json"])
@pytest.mark.parametrize("content", [b"", b'{"config": "'])
def test_empty_or_truncated_marker_is_named_and_healed(job, marker, content):
    path = job.victim / "done.json" if marker == "cache done.json" else job.run_dir / marker
    path.write_bytes(content)
    transfer = (job.run_dir / "transfer.pt").read_bytes()
    result = job.run()
    assert result.rc == 0, result.err
    assert str(path) in result.out and ("is empty" in result.out or "is not valid JSON" in result.out)
    json.loads(path.read_text())  # rewritten
    assert job.results() == results_only(job.metrics)
    assert (job.run_dir / "transfer.pt").read_bytes() == transfer


def test_victim_dir_of_the_fixture_is_the_stage_s(job, compose_cfg):
    # the tests above damage the directory the victim stage reads: check they agree
    cfg = compose_cfg("experiment=smoke")
    cfg.paths.cache_dir = str(job.cache)
    assert victim_dir(cfg) == job.victim


def _dead_pid() -> int:
    """The pid of a process that has exited (a SIGKILLed job's, as far as its files can tell)."""
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporary_files_of_a_killed_write_are_removed_by_the_rerun(job):
    """A job SIGKILLed while writing victim.pt and metrics.json leaves their temporary files; the
    rerun rewrites both and removes those, not the one a live process (this one) is writing."""
    import socket
    import subprocess
    import sys
    from modelguard.utils import io
    (job.victim / "victim.pt").unlink()  # killed before the rename: the entry is unfinished
    dead = _dead_pid()
    stale = [job.victim / f".victim.pt.{io._HOST}.{dead}.k1ll3d.tmp", job.run_dir / f".metrics.json.{io._HOST}.{dead}.x.tmp"]
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = job.victim / f".victim.pt.{io._HOST}.{sleeper.pid}.l1ve.tmp"
        elsewhere = job.victim / f".victim.pt.{socket.gethostname()}x.{dead}.n0de.tmp"  # another machine's
        for path in (*stale, live, elsewhere):
            path.write_bytes(b"half a file")
        result = job.run()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert result.rc == 0, result.err
    assert not any(p.exists() for p in stale)
    assert live.exists() and elsewhere.exists()
    torch.load(job.victim / "victim.pt", weights_only=True)
    assert job.results() == results_only(job.metrics)


def test_a_legacy_temporary_file_is_removed_only_when_old(tmp_path):
    from modelguard.utils.io import LEGACY_TMP_AGE_S, save_json
    young, old = tmp_path / ".a.json.abc123.tmp", tmp_path / ".a.json.def456.tmp"
    for path in (young, old):
        path.write_text("{")
    os.utime(old, (0, os.path.getmtime(old) - LEGACY_TMP_AGE_S - 5))
    save_json({"a": 1}, tmp_path / "a.json")
    assert young.exists() and not old.exists() and json.loads((tmp_path / "a.json").read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.json.abc123.tmp", "a.json"]
