"""paper_table.md: the paper-shaped table of a sweep (modelguard/report_paper.py).

Synthetic jobs carry the keys a real job writes (checked against a real 2-job multirun at the end),
laid out in a sweep directory as real sweeps are; the table is read back cell by cell."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelguard.report import collect, write_report
from modelguard.report_paper import cell, split_keys

REPO = Path(__file__).resolve().parents[1]

# The paper grid with its skip rules (experiment-grid.md §3), as launchers/paper_table.sh runs it.
ROWS = [("none", "none"), ("reverse_sigmoid", "none"), ("mad", "none"), ("am", "none"), ("top1", "none"),
        ("rounding", "none"), ("mld", "none"), ("none", "modelguard_s")]
LABELS = ["None (none)", "Reverse Sigmoid (reverse_sigmoid)", "MAD (mad)", "AM (am)", "Top-1 (top1)",
          "Rounding (rounding)", "ModelGuard-W (mld)", "ModelGuard-S"]
ATTACKS = ["naive", "top1", "s4l", "smoothing", "ddae", "ddae_plus", "bayes"]
COLUMNS = ["knockoff / naive", "knockoff / top1", "knockoff / s4l", "knockoff / smoothing", "knockoff / ddae",
           "knockoff / ddae_plus", "knockoff / bayes",
           "jbtr3 / naive", "jbtr3 / top1", "jbtr3 / ddae", "jbtr3 / ddae_plus", "jbtr3 / bayes"]
DEFENSE_KNOBS = {"reverse_sigmoid": {"defense.beta": 0.21, "defense.gamma": 0.2}, "mad": {"defense.eps": 1.0},
                 "am": {"defense.tau": 0.7}, "rounding": {"defense.decimals": 1}, "mld": {"defense.eps": 1.0}}


def runs(defense: str, quantize: str, policy: str, attack: str) -> bool:
    if attack in ("ddae", "ddae_plus", "bayes") and (defense, quantize) == ("none", "none"):
        return False  # rule 1
    if attack == "top1" and (defense not in ("reverse_sigmoid", "am") or quantize != "none"):
        return False  # rule 2
    return not (attack in ("s4l", "smoothing") and policy != "knockoff")  # rule 3


def grid() -> list[tuple[str, str, str, str]]:
    return [(d, q, p, a) for d, q in ROWS for p in ("knockoff", "jbtr3") for a in ATTACKS if runs(d, q, p, a)]


def record(defense: str, quantize: str, policy: str, attack: str, seed: int, acc: float, *,
           protected: float = 0.9, fidelity: float | None = None, status: str = "ok", **knobs) -> dict:
    """A job's metrics.json: the keys a real job writes (a subset; see the last test)."""
    r = {"seed": seed,
         "choice/arch": "mlp", "choice/attack": attack, "choice/dataset": "synthetic", "choice/defense": defense,
         "choice/experiment": "smoke", "choice/local": "default", "choice/paths": "default",
         "choice/policy": policy, "choice/quantize": quantize,
         "choice/recover": {"ddae": "network", "ddae_plus": "network", "bayes": "table"}.get(attack, "none"),
         "choice/substitute": "default", "choice/victim": "default",
         "attack.budget": 256, "attack.hard_label": attack == "top1",
         "attack.rotation_weight": 1.0 if attack == "s4l" else 0.0,
         "attack.queries_per_image": 3 if attack == "smoothing" else 1,
         **DEFENSE_KNOBS.get(defense, {})}
    if quantize == "modelguard_s":
        r.update({"quantize.eps": 1.0, "quantize.norm": "l1"})
    if policy == "jbtr3":
        r.update({"policy.seed_size": 1000, "policy.steps": 8})
    r.update(knobs)
    if status != "ok":
        return {**r, "status": status, "error": "ValueError: boom", "traceback": ["ValueError: boom\n"]}
    r.update({"victim/test_acc": 0.95, "defense/protected_acc": protected, "defense/l1_mean": 0.5, "queries": 256,
              "surrogate/test_acc": acc, "surrogate/fidelity": acc + 0.1 if fidelity is None else fidelity,
              "surrogate/best_test_acc": acc, "time/substitute_s": 1.0})
    return r


def write_jobs(root: Path, records: list[dict]) -> None:
    """Lay the records out as a real sweep: <attack>/<defense>/<overrides>/seed=<k>/metrics.json."""
    for r in records:
        values = {k: r.get(k, r.get(f"choice/{k}")) for k in ("dataset", "policy", "quantize", "defense.eps")}
        overrides = ",".join(f"{k}={v}" for k, v in values.items() if v not in (None, "none"))
        path = root / r["choice/attack"] / r["choice/defense"] / (overrides or "default") / f"seed={r['seed']}"
        path.mkdir(parents=True, exist_ok=True)
        (path / "metrics.json").write_text(json.dumps(r))


def tables(text: str) -> dict[tuple[str, str], list[list[str]]]:
    """(knob heading or '', metric heading) -> the table's lines as cells, header first."""
    out: dict[tuple[str, str], list[list[str]]] = {}
    knob, metric = "", ""
    nested = "\n### " in text
    for line in text.splitlines():
        if line.startswith("## ") and nested:
            knob = line[3:]
        elif line.startswith("### ") or (line.startswith("## ") and not nested):
            metric = line.split(" ", 1)[1]
        elif line.startswith("|") and not line.startswith("|---"):
            out.setdefault((knob, metric), []).append([c.strip() for c in line.strip().strip("|").split("|")])
    return out


ACC = "Substitute accuracy (`surrogate/test_acc`)"
FID = "Fidelity (`surrogate/fidelity`)"


def acc_of(defense: str, quantize: str, policy: str, attack: str) -> float:
    """A distinct accuracy per cell: row index / 10 + column index / 1000."""
    col = COLUMNS.index(f"{policy} / {attack}")
    return ROWS.index((defense, quantize)) / 10 + col / 1000 + 0.1


def test_the_paper_grid_two_seeds(tmp_path):
    records = []
    for d, q, p, a in grid():
        for seed in (0, 1):
            # seed 1 is 0.1 higher: mean = acc + 0.05, sample std = 0.0707...; protected acc per seed
            records.append(record(d, q, p, a, seed, acc_of(d, q, p, a) + 0.1 * seed, protected=0.90 + 0.04 * seed))
    assert len(records) == 2 * 78
    write_jobs(tmp_path, records)
    written = write_report(tmp_path)
    assert written["paper"] == tmp_path / "paper_table.md"
    text = written["paper"].read_text()
    got = tables(text)
    assert list(got) == [("", ACC), ("", FID)]  # no knob splits: the implied knobs (beta, hard_label) split nothing
    for key in got:
        header, *body = got[key]
        assert header == ["defense", "protected acc"] + COLUMNS
        assert [row[0] for row in body] == LABELS
        for (d, q), row in zip(ROWS, body):
            # protected acc: one value per seed (0.90, 0.94), not one per job
            assert row[1] == "0.920 ± 0.028"
            for col, value in zip(COLUMNS, row[2:]):
                p, a = col.split(" / ")
                if not runs(d, q, p, a):
                    assert value == "–", (d, q, col)
                else:
                    mean = acc_of(d, q, p, a) + 0.05 + (0.1 if key[1] == FID else 0.0)
                    assert value == f"{mean:.3f} ± 0.071", (d, q, col, value)
    # spot checks, written out
    none_row = got[("", ACC)][1]
    assert none_row[2:] == ["0.150 ± 0.071", "–", "0.152 ± 0.071", "0.153 ± 0.071", "–", "–", "–",
                            "0.157 ± 0.071", "–", "–", "–", "–"]
    mgs_row = got[("", ACC)][8]
    assert mgs_row[:4] == ["ModelGuard-S", "0.920 ± 0.028", "0.850 ± 0.071", "–"]
    assert "## " not in text.replace("## Substitute", "").replace("## Fidelity", "")


def test_the_synthetic_grid_is_the_launchers_grid():
    """grid() above is the validity matrix that tests/test_paper.py checks launchers/paper_table.sh against."""
    from tests.test_paper import MATRIX
    expected = {("none", "modelguard_s", p, a) if d == "modelguard_s" else (d, "none", p, a)
                for a, (defenses, policies) in MATRIX.items() for d in defenses for p in policies}
    assert set(grid()) == expected and len(grid()) == 78


def test_one_seed_failures_and_partial_cells(tmp_path):
    records = [record("none", "none", "knockoff", "naive", 0, 0.8123, protected=0.9512),
               record("mld", "none", "knockoff", "naive", 0, 0.40, protected=0.95),
               record("mld", "none", "knockoff", "naive", 1, 0.50, protected=0.93),
               record("mld", "none", "jbtr3", "naive", 0, 0.30, protected=0.95),
               record("mld", "none", "jbtr3", "naive", 1, 0.0, status="failed"),   # one seed failed: n=1
               record("none", "none", "jbtr3", "naive", 0, 0.0, status="failed")]  # the only job failed
    write_jobs(tmp_path, records)
    write_report(tmp_path)
    text = (tmp_path / "paper_table.md").read_text()
    got = tables(text)
    header, none_row, mld_row = got[("", ACC)]
    assert header == ["defense", "protected acc", "knockoff / naive", "jbtr3 / naive"]
    assert none_row == ["None (none)", "0.951 (n=1)", "0.812 (n=1)", "failed"]
    assert mld_row == ["ModelGuard-W (mld)", "0.940 ± 0.014", "0.450 ± 0.071", "0.300 (n=1)"]
    assert got[("", FID)][2] == ["ModelGuard-W (mld)", "0.940 ± 0.014", "0.550 ± 0.071", "0.400 (n=1)"]
    assert "4 finished job(s), seed(s) 0, 1; 2 failed" in text


def test_a_single_seed_prints_the_value_with_three_decimals():
    assert cell([0.70312], 1) == "0.703"
    assert cell([0.4, 0.5], 2) == "0.450 ± 0.071"
    assert cell([0.4], 2) == "0.400 (n=1)"
    assert cell([], 2) == "–" and cell([], 2, failed=1) == "failed"


def test_a_knob_varying_within_a_cell_gives_one_table_per_value(tmp_path):
    """defense.eps=0.5,1.0 for ModelGuard-W is never averaged: one pair of tables per eps; the jobs
    without an eps (no defense, ModelGuard-S) are in both; MAD's own eps places it in one."""
    records = []
    for seed in (0, 1):
        records.append(record("none", "none", "knockoff", "naive", seed, 0.9))
        records.append(record("none", "modelguard_s", "knockoff", "naive", seed, 0.6))
        records.append(record("mad", "none", "knockoff", "naive", seed, 0.7))  # defense.eps 1.0
        for eps, acc in ((0.5, 0.55), (1.0, 0.35)):
            records.append(record("mld", "none", "knockoff", "naive", seed, acc + 0.02 * seed, **{"defense.eps": eps}))
    write_jobs(tmp_path, records)
    assert split_keys(collect(tmp_path)) == ["defense.eps"]
    write_report(tmp_path)
    text = (tmp_path / "paper_table.md").read_text()
    got = tables(text)
    assert list(got) == [("defense.eps = 0.5", ACC), ("defense.eps = 0.5", FID),
                         ("defense.eps = 1.0", ACC), ("defense.eps = 1.0", FID)]
    assert "`defense.eps`" in text
    assert got[("defense.eps = 0.5", ACC)][1:] == [
        ["None (none)", "0.900 ± 0.000", "0.900 ± 0.000"],
        ["ModelGuard-W (mld)", "0.900 ± 0.000", "0.560 ± 0.014"],
        ["ModelGuard-S", "0.900 ± 0.000", "0.600 ± 0.000"]]
    assert got[("defense.eps = 1.0", ACC)][1:] == [
        ["None (none)", "0.900 ± 0.000", "0.900 ± 0.000"],
        ["MAD (mad)", "0.900 ± 0.000", "0.700 ± 0.000"],
        ["ModelGuard-W (mld)", "0.900 ± 0.000", "0.360 ± 0.014"],
        ["ModelGuard-S", "0.900 ± 0.000", "0.600 ± 0.000"]]


def test_a_choice_varying_within_a_cell_splits_too_and_other_pairs_come_last(tmp_path):
    """Two datasets in one sweep are two tables; a defense behind ModelGuard-S other than none
    follows the eight rows, labelled with both."""
    records = [record(d, q, "knockoff", "naive", 0, 0.5, **{"choice/dataset": ds})
               for ds in ("mnist", "cifar10") for d, q in (("mld", "modelguard_s"), ("mld", "none"), ("none", "none"))]
    write_jobs(tmp_path, records)
    write_report(tmp_path)
    got = tables((tmp_path / "paper_table.md").read_text())
    assert [k for k in got] == [("dataset = cifar10", ACC), ("dataset = cifar10", FID),
                                ("dataset = mnist", ACC), ("dataset = mnist", FID)]
    assert [row[0] for row in got[("dataset = mnist", ACC)][1:]] == [
        "None (none)", "ModelGuard-W (mld)", "ModelGuard-W (mld) + ModelGuard-S"]


def test_no_finished_job_no_table_and_a_stale_one_goes(tmp_path):
    (tmp_path / "paper_table.md").write_text("stale")
    write_jobs(tmp_path, [record("mld", "none", "knockoff", "naive", 0, 0.0, status="failed")])
    written = write_report(tmp_path)
    assert "paper" not in written and not (tmp_path / "paper_table.md").exists()
    assert not list(tmp_path.glob(".paper_table.md.*"))  # the atomic write left no temp file


def test_a_real_two_job_multirun(tmp_path):
    """python main.py -m ... defense=none quantize=none,modelguard_s policy=jbtr3 (about 10 s): the
    table's cells are the jobs' own metrics, and the synthetic records above use real keys."""
    sweep = tmp_path / "sweep"
    env = {**os.environ, "MODELGUARD_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "main.py", "-m", "sweep_name=pt", "experiment=smoke", "threads=1",
                           "progress=false", "defense=none", "quantize=none,modelguard_s", "policy=jbtr3",
                           "attack=naive", f"hydra.sweep.dir={sweep}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = {r["choice/quantize"]: r for r in collect(sweep)}
    assert set(jobs) == {"none", "modelguard_s"}
    for q, real in jobs.items():
        fake = record("none", q, "jbtr3", "naive", 0, 0.5)
        assert set(fake) - {"status"} <= set(real), set(fake) - set(real)
        assert {k: fake[k] for k in fake if k.startswith("choice/")} == {k: real[k] for k in real if k.startswith("choice/")}
    got = tables((sweep / "paper_table.md").read_text())  # written by the multirun's report callback
    assert list(got) == [("", ACC), ("", FID)]
    for (_, title), metric in ((("", ACC), "surrogate/test_acc"), (("", FID), "surrogate/fidelity")):
        header, *body = got[("", title)]
        assert header == ["defense", "protected acc", "jbtr3 / naive"]
        assert body == [[label, f"{jobs[q]['defense/protected_acc']:.3f}", f"{jobs[q][metric]:.3f}"]
                        for label, q in (("None (none)", "none"), ("ModelGuard-S", "modelguard_s"))]


def test_cli_names_the_paper_table(tmp_path):
    write_jobs(tmp_path, [record("none", "none", "knockoff", "naive", 0, 0.5)])
    proc = subprocess.run([sys.executable, "-m", "modelguard.report", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert str(tmp_path / "paper_table.md") in proc.stdout
