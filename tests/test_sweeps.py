"""Named multirun sweeps: job dirs, failure handling, the report, resume, and the shared victim cache.

Sweeps run `python main.py -m ...` in a subprocess, exactly as a user does, with their outputs
and caches under tmp_path. The ones that take more than ~20 s on 2 busy cores are marked slow."""
from __future__ import annotations

import csv
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelguard.report import collect, write_report
from modelguard.utils.cache import cached_artifact

REPO = Path(__file__).resolve().parents[1]
SMOKE = ("experiment=smoke", "threads=1")


def sweep(tmp_path: Path, name: str, *overrides: str) -> tuple[subprocess.CompletedProcess, float, Path]:
    """Run a named multirun into tmp_path/sweeps/<name>; returns (process, wall seconds, sweep dir)."""
    sweep_dir = tmp_path / "sweeps" / name
    env = {**os.environ, "MODELGUARD_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "main.py", "-m", f"sweep_name={name}", *SMOKE, *overrides,
           f"hydra.sweep.dir={sweep_dir}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    return proc, time.perf_counter() - start, sweep_dir


def markers(sweep_dir: Path) -> dict[str, int]:
    """mtime of every stage done marker, by path relative to the sweep dir."""
    return {str(p.relative_to(sweep_dir)): p.stat().st_mtime_ns for p in sweep_dir.glob("**/stages/*.json")}


def job_dirs(sweep_dir: Path) -> set[str]:
    return {str(p.parent.relative_to(sweep_dir)) for p in sweep_dir.glob("**/metrics.json")}


# --------------------------------------------------------------------------- report, no runs

def _fake_job(root: Path, where: str, attack: str, defense: str, seed: int, eps: float | None,
              status: str | None = None) -> None:
    strength = eps or 0.0
    record = {"choice/attack": attack, "choice/defense": defense, "choice/dataset": "synthetic", "seed": seed,
              "attack.budget": 256, "victim/test_acc": 0.9, "queries": 256,
              "defense/protected_acc": 0.9 - 0.1 * strength + 0.01 * seed,
              "defense/l1_mean": 0.4 * strength,
              "surrogate/test_acc": (0.8 if attack == "naive" else 0.7) - 0.2 * strength + 0.02 * seed,
              "surrogate/fidelity": 0.8, "time/victim_s": 1.0}
    if eps is not None:
        record["defense.eps"] = eps
    if status:
        record = {k: v for k, v in record.items() if "/" not in k or k.startswith("choice/")}
        record.update(status=status, error="ValueError: boom", traceback=["Traceback ...\n", "ValueError: boom\n"])
    path = root / where / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))


def test_report_reads_metrics_not_dir_names(tmp_path):
    root = tmp_path / "sweep"
    n = 0
    for attack in ("naive", "top1"):
        for seed in (0, 1):
            _fake_job(root, f"job{n}", attack, "none", seed, None)
            n += 1
            for eps in (0.5, 1.0, 2.0):
                _fake_job(root, f"deep/er/job{n}", attack, "mad", seed, eps)
                n += 1
    _fake_job(root, "broken", "naive", "mad", 0, 4.0, status="failed")
    _fake_job(root, ".submitit/123", "naive", "none", 9, None)  # never a job's result

    rows = collect(root)
    assert len(rows) == n + 1
    assert {r["status"] for r in rows} == {"ok", "failed"}
    written = write_report(root)
    assert set(written) == {"csv", "md", "paper", "png"}

    with open(root / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == n + 1
    assert {"choice/attack", "choice/defense", "seed", "defense.eps", "surrogate/test_acc", "status"} <= set(table[0])
    assert "traceback" not in table[0]  # a failed job's traceback stays in its metrics.json

    md = (root / "results.md").read_text()
    # 2 attacks x (none + 3 eps) lines, mean ± std over the two seeds
    assert md.count("| naive |") == 4 and md.count("| top1 |") == 4
    assert "| naive | mad | 0.5 | 2 |" in md
    assert "±" in md
    assert "1 failed job" in md and "broken" in md
    assert (root / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    write_report(root, x_metric="defense/l1_mean")


def test_report_prints_budgets_and_query_counts_as_integers(tmp_path):
    """results.md printed 1e+04 for 10000 queries (the mean of integers is a float; issue 11)."""
    for seed in (0, 1):
        for budget in (5000, 10000):
            _fake_job(tmp_path, f"b{budget}/s{seed}", "naive", "none", seed, None)
            path = tmp_path / f"b{budget}/s{seed}" / "metrics.json"
            record = json.loads(path.read_text())
            record.update({"attack.budget": budget, "queries": budget, "surrogate/test_acc": 0.5 + 0.01 * seed})
            path.write_text(json.dumps(record))
    write_report(tmp_path)
    md = (tmp_path / "results.md").read_text()
    assert "e+0" not in md
    assert "| naive | none | 10000 | 2 | 0.9 ± 0 | 0.905 ± 0.0071 | 0 ± 0 | 10000 ± 0 | 0.505 ± 0.0071 |" in md


def test_report_cli(tmp_path):
    _fake_job(tmp_path, "a", "naive", "none", 0, None)
    proc = subprocess.run([sys.executable, "-m", "modelguard.report", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "results.csv").exists() and (tmp_path / "results.md").exists()


# --------------------------------------------------------------------------- shared cache

def _slow_build(directory: Path) -> dict:
    """Writes its artifact in pieces (not atomically), slowly, and counts how often it ran."""
    with open(directory.parent / "builds.log", "a") as f:
        f.write(f"{os.getpid()}\n")
    with open(directory / "blob.bin", "wb") as f:
        for _ in range(10):
            f.write(b"x" * 100_000)
            f.flush()
            time.sleep(0.05)
    return {"size": 1_000_000}


def _use_artifact(directory: str, queue) -> None:
    metrics = cached_artifact(Path(directory), _slow_build).metrics
    size = (Path(directory) / "blob.bin").stat().st_size
    queue.put((metrics["size"], size))


def test_cached_artifact_built_once_and_never_read_half_written(tmp_path):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    directory = tmp_path / "cache" / "artifact"
    procs = [ctx.Process(target=_use_artifact, args=(str(directory), queue)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    seen = [queue.get(timeout=5) for _ in procs]
    assert seen == [(1_000_000, 1_000_000)] * 4  # every reader saw the whole artifact
    assert len((tmp_path / "cache" / "builds.log").read_text().split()) == 1


def _victim_stage(cfg, queue) -> None:
    from modelguard.run import run_experiment

    run_experiment(cfg, {})
    record = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    queue.put((os.getpid(), record["victim/test_acc"], record["victim/trained_here"], record["time/victim_wait_s"]))


def test_concurrent_jobs_train_the_victim_once(smoke, tmp_path, monkeypatch):
    """The real victim stage in 4 processes at once on an empty cache: one training, one victim,
    and each job's metrics.json says whether it trained it (issue 11)."""
    import modelguard.stages.victim as victim_stage

    real = victim_stage.train_victim

    def counting(cfg, directory):
        with open(tmp_path / "trainings.log", "a") as f:
            f.write(f"{os.getpid()}\n")
        return real(cfg, directory)

    monkeypatch.setattr(victim_stage, "train_victim", counting)  # inherited by the forked jobs
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    cfgs = [smoke("stages=[victim]", "threads=1", output_dir=tmp_path / f"job{i}") for i in range(4)]
    procs = [ctx.Process(target=_victim_stage, args=(cfg, queue)) for cfg in cfgs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    seen = [queue.get(timeout=5) for _ in procs]
    trainers = (tmp_path / "trainings.log").read_text().split()
    print(f"4 concurrent jobs, {len(trainers)} training(s); waits {sorted(round(s[3], 2) for s in seen)} s")
    assert len(trainers) == 1
    assert len({acc for _, acc, _, _ in seen}) == 1
    assert [pid for pid, _, here, _ in seen if here] == [int(trainers[0])]  # the record names the trainer
    assert not list((tmp_path / "cache").glob("**/*.tmp"))


# --------------------------------------------------------------------------- real sweeps

def test_failed_job_is_recorded_and_others_still_run(tmp_path):
    proc, _, root = sweep(tmp_path, "fails", "stages=[victim]", "seed=0,oops")
    assert proc.returncode != 0  # the sweep says something failed ...
    assert "seed='oops' is invalid" in proc.stderr
    ok = json.loads((root / "naive/mld/experiment=smoke/seed=0/metrics.json").read_text())
    bad = json.loads((root / "naive/mld/experiment=smoke/seed=oops/metrics.json").read_text())
    assert "victim/test_acc" in ok and ok.get("status", "ok") == "ok"  # ... but the good job ran
    assert bad["status"] == "failed" and "oops" in bad["error"] and bad["choice/defense"] == "mld"
    write_report(root)
    assert "1 failed job" in (root / "results.md").read_text()


@pytest.mark.slow
def test_basic_sweep_dirs_report_and_resume(tmp_path):
    proc, first, root = sweep(tmp_path, "basic", "defense=none,top1", "attack=naive,top1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = {f"{a}/{d}/experiment=smoke/seed=0" for a in ("naive", "top1") for d in ("none", "top1")}
    assert job_dirs(root) == expected
    for job in expected:
        record = json.loads((root / job / "metrics.json").read_text())
        assert job.startswith(f"{record['choice/attack']}/{record['choice/defense']}/")
        assert record["seed"] == 0 and "surrogate/test_acc" in record
    # the callback wrote the report
    with open(root / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    assert (root / "results.md").exists() and (root / "tradeoff.png").exists()

    # relaunching a finished sweep recomputes nothing
    before = markers(root)
    proc, again, _ = sweep(tmp_path, "basic", "defense=none,top1", "attack=naive,top1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert markers(root) == before
    print(f"first launch {first:.1f}s, relaunch {again:.1f}s")

    # an interrupted job (its last stages missing) is the only one that runs again
    redo = "top1/top1/experiment=smoke/seed=0"
    for name in ("query", "substitute"):
        (root / redo / "stages" / f"{name}.json").unlink()
    proc, _, _ = sweep(tmp_path, "basic", "defense=none,top1", "attack=naive,top1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = markers(root)
    changed = {k for k in after if after[k] != before.get(k)}
    assert changed == {f"{redo}/stages/query.json", f"{redo}/stages/substitute.json"}


@pytest.mark.slow
def test_cluster_local_sweep_runs_jobs_in_parallel_processes(tmp_path):
    proc, _, root = sweep(tmp_path, "local", "cluster=local", "defense=none,top1", "attack=naive,top1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Submitit 'local' sweep" in proc.stdout + proc.stderr
    expected = {f"{a}/{d}/experiment=smoke/seed=0" for a in ("naive", "top1") for d in ("none", "top1")}
    assert job_dirs(root) == expected  # cluster=local does not leak into the dir names
    records = [json.loads((root / j / "metrics.json").read_text()) for j in expected]
    assert len({r["victim/test_acc"] for r in records}) == 1  # one shared victim
    assert len(list((tmp_path / "cache").glob("victims/**/done.json"))) == 1
    with open(root / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    before = markers(root)
    proc, _, _ = sweep(tmp_path, "local", "cluster=local", "defense=none,top1", "attack=naive,top1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert markers(root) == before


@pytest.mark.slow
def test_killed_sweep_completes_on_relaunch(tmp_path):
    """Kill a sweep (SIGKILL, no clean-up) after its first job finished; relaunching completes it
    and leaves the finished job untouched."""
    import signal
    name, overrides = "killed", ("defense=none,top1", "attack=naive,top1")
    sweep_dir = tmp_path / "sweeps" / name
    env = {**os.environ, "MODELGUARD_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "main.py", "-m", f"sweep_name={name}", *SMOKE, *overrides, f"hydra.sweep.dir={sweep_dir}"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list(sweep_dir.glob("**/metrics.json")):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = list(sweep_dir.glob("**/metrics.json"))
    assert 1 <= len(finished) < 4, "the sweep should have been killed midway"
    before = markers(sweep_dir)
    done_job = str(finished[0].parent.relative_to(sweep_dir))
    relaunch, _, root = sweep(tmp_path, name, *overrides)
    assert relaunch.returncode == 0, relaunch.stderr[-3000:]
    assert len(job_dirs(root)) == 4
    with open(root / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    after = markers(root)
    assert all(after[k] == before[k] for k in before if k.startswith(done_job + "/"))


@pytest.mark.slow
def test_embedded_results_launcher_on_a_tiny_grid(tmp_path):
    """launchers/embedded_results.sh end to end on smoke data: 3 defense labels (one behind
    ModelGuard-S) x 2 attacks x 2 seeds in lanes, the report, the document; a rerun resumes
    (recomputes nothing) and regenerates the document."""
    sweep_dir, out = tmp_path / "sweeps" / "tiny", tmp_path / "docs" / "results.md"
    env = {**os.environ, "MODELGUARD_CACHE": str(tmp_path / "cache"), "PYTHON": sys.executable,
           "NAME": "tiny", "SWEEP_DIR": str(sweep_dir), "DOC": str(out), "DEFENSES": "none top1",
           "QDEFENSES": "none", "ATTACKS": "naive bayes", "SEEDS": "0 1"}
    cmd = ["bash", "launchers/embedded_results.sh", "experiment=smoke"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(sweep_dir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and {r["status"] for r in rows} == {"ok"}
    assert {(r["choice/defense"], r["choice/quantize"]) for r in rows} == {
        ("none", "none"), ("top1", "none"), ("none", "modelguard_s")}
    text = out.read_text()
    assert "bash launchers/embedded_results.sh experiment=smoke" in text
    assert "| `none + modelguard_s` |" in text and "`bayes` recovered" in text
    assert "| wall time |" in text and "were reused" not in text
    for png in ("tradeoff_protected_acc", "tradeoff_l1_mean", "recovery_l1"):
        assert (out.parent / "results" / f"{png}.png").exists()
    assert len((sweep_dir / ".launcher" / "commands.txt").read_text().splitlines()) == 2 + 1 + 8

    before = markers(sweep_dir)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert markers(sweep_dir) == before
    assert "12 of 12 finished jobs were reused" in out.read_text()
