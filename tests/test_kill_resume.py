"""Kill and resume (issue 11): SIGKILL the default pipeline at random points, relaunch the same
command until it completes, and compare with an uninterrupted run: identical metrics (timings
aside) and byte-identical transfer sets and substitutes. Once for a single run, once for a
``cluster=local`` sweep (submitit processes). Slow: each launch pays torch's import.

Each kill lands at a uniformly random moment between the launch's first stage line (start-up,
torch's import and the config, is over) and the moment the uninterrupted run had written its
results, plus a tenth. ``MODELGUARD_KILLS`` sets the kills per harness (default 10); the tally,
with the markers present after each kill, is printed (``-s``)."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import results_only

REPO = Path(__file__).resolve().parents[1]
KILLS = int(os.environ.get("MODELGUARD_KILLS", "10"))
# the default pipeline (all four stages) on the smoke data, a few seconds of stage work per run
SMALL = ("experiment=smoke", "victim.epochs=150", "substitute.epochs=150", "threads=1")
ARTIFACTS = ("transfer.pt", "substitute.pt")


def launch(args: list[str], cache: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "MODELGUARD_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "main.py", *args], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # its own group: kill it all


STAGES = ("victim", "defense", "query", "substitute")


def stage_lines(logs: list[Path], text: str = "") -> int:
    """How many "stage <text>" lines the jobs have logged so far (a job logs one per stage:
    "stage query ..." when it runs it, "stage query: already done ..." when it reuses it)."""
    return sum(p.read_text(errors="replace").count(f"][modelguard][INFO] - stage {text}") for p in logs if p.is_file())


def wait_for_stages(proc: subprocess.Popen, logs, text: str = "") -> float:
    """Block until the launch logs a new "stage <text>" line or exits; returns the time it took.
    With no text: its first stage line (start-up, torch's import and the config, is over)."""
    start, seen = time.perf_counter(), stage_lines(logs(), text)
    while proc.poll() is None and stage_lines(logs(), text) == seen:
        time.sleep(0.01)
    return time.perf_counter() - start


def uninterrupted(args: list[str], cache: Path, log: Path, logs, results: list[Path]) -> float:
    """Run once to the end; returns the seconds from its first stage line until every job wrote
    its metrics.json (``results``), a tenth more for the exit: the window in which kills land."""
    proc = launch(args, cache, log)
    wait_for_stages(proc, logs)
    start = time.perf_counter()
    while proc.poll() is None and not all(path.exists() for path in results):
        time.sleep(0.02)
    window = 1.1 * (time.perf_counter() - start)
    assert proc.wait(timeout=900) == 0, log.read_text()[-3000:]
    return window


def stages_done(job_dirs: list[Path]) -> str:
    """Which stage markers exist, per job (where the kill landed)."""
    return " | ".join(",".join(p.stem for p in sorted((d / "stages").glob("*.json"), key=_order)) or "-"
                      for d in job_dirs)


def _order(path: Path) -> int:
    return ["victim", "defense", "query", "substitute"].index(path.stem)


def kill_until_done(args: list[str], cache: Path, job_dirs: list[Path], log: Path, logs, window: float,
                    rng: random.Random, wanted: int):
    """Episodes on an empty run dir and cache: launch, SIGKILL the process group at a random
    moment within ``window`` seconds after its first stage line, relaunch ... until a launch
    completes; episodes until ``wanted`` kills. Yields the kills so far (delay, the markers
    present after it) at the end of each episode, for the caller to compare results.

    Half the kills land anywhere in the window, half just after a randomly chosen stage starts
    (``stage <name> ...``; a stage already done is never started, and that launch runs on).
    A launch whose jobs have all written their results by the kill moment is left to exit:
    what remains is the launcher's own tail (submitit's polling, the report), which can take
    longer than the window, so killing there would relaunch forever."""
    kills: list[str] = []
    while len(kills) < wanted:
        for path in [cache, *job_dirs]:
            subprocess.run(["rm", "-rf", str(path)], check=True)
        while True:
            started = time.time()
            proc = launch(args, cache, log)
            wait_for_stages(proc, logs)
            if rng.random() < 0.5:
                wait = rng.uniform(0, window)  # anywhere in the stages: mostly inside the training loops
                where = f"{wait:5.2f}s into the stages"
            else:
                # aimed at the start of one stage, so the short ones (defense, query) are hit too
                target = rng.choice(STAGES)
                wait_for_stages(proc, logs, f"{target} ...")
                wait = rng.uniform(0, 0.05)
                where = f"{wait:5.2f}s into stage {target}"
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                if all(_written_since(d / "metrics.json", started) for d in job_dirs):
                    assert proc.wait(timeout=900) == 0, log.read_text()[-3000:]
                    break
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                kills.append(f"{where}: markers {stages_done(job_dirs)}")
                continue
            assert proc.returncode == 0, log.read_text()[-3000:]
            break  # the episode completed: this state is compared by the caller
        yield kills


def _written_since(path: Path, since: float) -> bool:
    return path.exists() and path.stat().st_mtime >= since


def same_results(reference: Path, resumed: Path) -> None:
    a = json.loads((reference / "metrics.json").read_text())
    b = json.loads((resumed / "metrics.json").read_text())
    assert results_only(a) == results_only(b), {k: (a.get(k), b.get(k)) for k in results_only(a)
                                                if a.get(k) != b.get(k)}
    for name in ARTIFACTS:
        assert (reference / name).read_bytes() == (resumed / name).read_bytes(), name


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_gives_the_uninterrupted_results(tmp_path):
    log = tmp_path / "launches.log"
    reference = tmp_path / "reference"
    total = uninterrupted([*SMALL, f"hydra.run.dir={reference}"], tmp_path / "reference-cache", log, lambda: [log],
                          [reference / "metrics.json"])
    run_dir, cache = tmp_path / "killed", tmp_path / "cache"
    rng = random.Random(11)
    episodes = 0
    for kills in kill_until_done([*SMALL, f"hydra.run.dir={run_dir}"], cache, [run_dir], log, lambda: [log],
                                 total, rng, KILLS):
        episodes += 1
        same_results(reference, run_dir)
    print(f"\nsingle run (kill window {total:.1f}s): {len(kills)} of {len(kills)} kills survived in "
          f"{episodes} episodes; markers after each kill:\n  " + "\n  ".join(kills))
    assert len(kills) >= KILLS


@pytest.mark.slow
def test_sigkill_a_cluster_local_sweep_then_relaunch_gives_the_uninterrupted_results(tmp_path):
    log = tmp_path / "launches.log"
    sweep = ["-m", "sweep_name=kill", "cluster=local", *SMALL, "defense=none,mld"]
    reference = tmp_path / "reference"
    jobs = ["naive/none/experiment=smoke,substitute.epochs=150,victim.epochs=150/seed=0",
            "naive/mld/experiment=smoke,substitute.epochs=150,victim.epochs=150/seed=0"]
    total = uninterrupted([*sweep, f"hydra.sweep.dir={reference}"], tmp_path / "reference-cache", log,
                          lambda: list(reference.glob("naive/*/*/seed=0/main.log")),
                          [reference / j / "metrics.json" for j in jobs])
    assert all((reference / j / "metrics.json").exists() for j in jobs), list(reference.rglob("metrics.json"))
    sweep_dir, cache = tmp_path / "killed", tmp_path / "cache"
    rng = random.Random(12)
    episodes = 0
    for kills in kill_until_done([*sweep, f"hydra.sweep.dir={sweep_dir}"], cache, [sweep_dir / j for j in jobs],
                                 log, lambda: [sweep_dir / j / "main.log" for j in jobs], total, rng, KILLS):
        episodes += 1
        for job in jobs:
            same_results(reference / job, sweep_dir / job)
    print(f"\ncluster=local sweep of 2 jobs (kill window {total:.1f}s): {len(kills)} of {len(kills)} kills "
          f"survived in {episodes} episodes; markers (none | mld) after each kill:\n  " + "\n  ".join(kills))
    assert len(kills) >= KILLS
