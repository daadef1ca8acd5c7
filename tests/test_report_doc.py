"""scripts/results_doc.py: the results document written from a sweep's results.csv (no runs)."""
from __future__ import annotations

import datetime as dt
import importlib.util
import statistics
from pathlib import Path

import pytest

from modelguard.report import write_csv

REPO = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("results_doc", REPO / "scripts" / "results_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


doc = _load()

# Substitute accuracy per (defense label, attack) and seed: hand-picked so mean ± std is easy to check.
ACC = {("none", "naive"): [0.88, 0.86, 0.87], ("mld", "naive"): [0.30, 0.40, 0.35],
       ("mld", "bayes"): [0.80, 0.70, 0.90], ("mld + modelguard_s", "naive"): [0.25, 0.27, 0.29],
       ("mld + modelguard_s", "bayes"): [0.60, 0.70, 0.80], ("none", "bayes"): [0.90, 0.89, 0.88]}
PROTECTED = {"none": [0.97, 0.96, 0.95], "mld": [0.97, 0.96, 0.95], "mld + modelguard_s": [0.96, 0.96, 0.96]}
L1 = {"none": [0.0, 0.0, 0.0], "mld": [1.0, 1.0, 1.0], "mld + modelguard_s": [0.5, 0.7, 0.9]}


def _record(label: str, attack: str, seed: int) -> dict:
    defense, _, quantize = label.partition(" + ")
    r = {"choice/attack": attack, "choice/defense": defense, "choice/quantize": quantize or "none",
         "choice/dataset": "mnist", "choice/arch": "lenet", "choice/recover": "table" if attack == "bayes" else "none",
         "seed": seed, "status": "ok", "attack.budget": 10000, "victim/test_acc": 0.97,
         "defense/protected_acc": PROTECTED[label][seed], "defense/l1_mean": L1[label][seed], "defense/l1_max": 1.0,
         "surrogate/test_acc": ACC[(label, attack)][seed], "surrogate/fidelity": ACC[(label, attack)][seed] + 0.01,
         "time/defense_s": 1.0, "time/query_s": 2.0, "time/substitute_s": 10.0,
         "run_dir": f"{attack}/{defense}/{'quantize=' + quantize + '/' if quantize else ''}seed={seed}"}
    if attack == "bayes":
        r["recover/l1_mean"] = 0.1 * (seed + 1)
        r["recover/released_l1_mean"] = 0.9
    return r


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    rows = [_record(label, attack, seed) for (label, attack) in ACC for seed in (0, 1, 2)
            if not (label == "mld" and attack == "bayes" and seed == 2)]  # one job missing: n=2
    rows.append({"choice/attack": "bayes", "choice/defense": "mld", "choice/quantize": "none", "seed": 2,
                 "status": "failed", "error": "ValueError: boom", "run_dir": "bayes/mld/seed=2"})
    root = tmp_path / "sweep"
    root.mkdir()
    write_csv(rows, root / "results.csv")  # the report's own writer: the real file format
    return root


def build(sweep: Path, tmp_path: Path, **kw) -> tuple[str, Path]:
    out = tmp_path / "docs" / "results.md"
    text = doc.build(sweep, out, tmp_path / "docs" / "results", "bash launchers/embedded_results.sh",
                     wall_seconds=3000.0, now=dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.timezone.utc),
                     settings=False, **kw)
    return text, out


def row_of(text: str, section: str, label: str) -> list[str]:
    """The cells of the table row for `label` in the part of the document after `section`."""
    part = text[text.index(section):]
    line = next(ln for ln in part.splitlines() if ln.startswith(f"| `{label}` |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_cell_formatting():
    assert doc.cell([0.8, 0.7, 0.9], 3) == "0.800 ± 0.100"  # sample std
    assert doc.cell([0.5], 1) == "0.500 ± 0.000"
    assert doc.cell([0.3, 0.4], 3) == "0.350 ± 0.071 (n=2)"
    assert doc.cell([], 3) == "–"
    assert doc.mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)


def test_tables_hold_mean_and_std_over_seeds(sweep, tmp_path):
    text, out = build(sweep, tmp_path, plots=False)
    assert out.read_text() == text
    # (1) per defense: each seed counted once although two attacks ran on it
    none = row_of(text, "## 1.", "none")
    assert none[1:3] == ["0.960 ± 0.010", "0.000 ± 0.000"]
    quantized = row_of(text, "## 1.", "mld + modelguard_s")
    assert quantized[1:3] == ["0.960 ± 0.000", "0.700 ± 0.200"]
    # (2) attack x defense, columns in the order naive, bayes
    acc = row_of(text, "### Substitute accuracy", "mld")
    assert acc[1:] == ["0.350 ± 0.050", "0.750 ± 0.071 (n=2)"]
    fid = row_of(text, "### Fidelity", "mld + modelguard_s")
    assert fid[1:] == ["0.280 ± 0.020", "0.710 ± 0.100"]
    expected = ACC[("none", "bayes")]
    assert row_of(text, "### Substitute accuracy", "none")[2] == \
        f"{statistics.fmean(expected):.3f} ± {statistics.stdev(expected):.3f}"
    # (3) adaptive attacks only: recovered vs released
    rec = row_of(text, "## 3.", "none")
    assert rec[1:] == ["0.200 ± 0.100", "0.900 ± 0.000"]
    assert "`naive` recovered" not in text
    # rows in the order of the paper's tables, the quantized defense last
    section = text[text.index("### Substitute accuracy"):text.index("### Fidelity")]
    assert section.index("| `none` |") < section.index("| `mld` |") < section.index("| `mld + modelguard_s` |")


def test_metadata_failures_and_plots(sweep, tmp_path):
    (sweep / ".launcher").mkdir()
    (sweep / ".launcher" / "commands.txt").write_text("python main.py -m sweep_name=x attack=naive\n")
    text, out = build(sweep, tmp_path)
    assert "bash launchers/embedded_results.sh\n```" in text
    assert "| date (UTC) | 2026-01-02 03:04 |" in text
    assert "| git commit | `" in text
    assert "| wall time | 50.0 min (3000 s)" in text
    assert "18 jobs: 17 finished, 1 failed" in text
    assert "python main.py -m sweep_name=x attack=naive" in text
    assert "- `bayes/mld/seed=2`: ValueError: boom" in text
    for name in ("tradeoff_protected_acc", "tradeoff_l1_mean", "recovery_l1"):
        png = out.parent / "results" / f"{name}.png"
        assert png.read_bytes()[:4] == b"\x89PNG"
        assert f"](results/{name}.png)" in text
    assert sorted(p.name for p in out.parent.iterdir()) == ["results", "results.md"]  # no temp files left


def test_stale_recovery_plot_is_removed(sweep, tmp_path):
    build(sweep, tmp_path)
    png = tmp_path / "docs" / "results" / "recovery_l1.png"
    assert png.exists()
    rows = [r for r in doc.read_results(sweep / "results.csv") if r.get("choice/attack") != "bayes"]
    write_csv(rows, sweep / "results.csv")
    text, _ = build(sweep, tmp_path)
    assert not png.exists() and "recovery_l1.png" not in text and "## 3." not in text


def test_settings_diff_against_repository_defaults(tmp_path):
    """Knobs the launcher changed show up with default and value; unchanged ones do not."""
    rows = []
    for seed in (0, 1):
        r = _record("mld", "naive", seed)
        r.update({"choice/attack": "ddae_plus", "choice/recover": "network", "recover.epochs": 50,
                  "recover.scheduler.step_size": 25, "recover.batch_size": 1024, "attack.budget": 10000})
        rows.append(r)
    changed = doc.changed_settings(rows)
    assert ("recover.epochs", "200", "50", "ddae_plus") in changed
    assert ("recover.scheduler.step_size", "100", "25", "ddae_plus") in changed
    assert not any(k in ("recover.batch_size", "attack.budget") for k, *_ in changed)


def test_tradeoff_curves_are_not_split_by_what_the_attack_fixes():
    """attack=bayes fixes recover=table and attack=naive recover=none: one curve per defense in
    every panel. A knob that varies within one attack's panel still splits its curves."""
    from modelguard.report import _columns, curve_splits

    rows = [_record(label, attack, seed) for (label, attack) in ACC for seed in (0, 1, 2)]
    config, _ = _columns(rows)
    assert "choice/recover" in config and curve_splits(rows, config) == []
    for r in rows[:3]:
        r["choice/policy"] = "jbtr3"
    for r in rows[3:]:
        r["choice/policy"] = "knockoff"
    config, _ = _columns(rows)
    assert curve_splits(rows, config) == ["choice/policy"]


def test_same_job_under_other_settings_is_flagged(sweep, tmp_path):
    """A rerun with other recovery settings into the same sweep adds jobs: the document says so."""
    rows = doc.read_results(sweep / "results.csv")
    extra = [dict(r, **{"attack.table_rows_per_query": 5, "run_dir": r["run_dir"] + "-other"})
             for r in rows if r.get("choice/attack") == "bayes" and r.get("status") == "ok"]
    write_csv(rows + extra, sweep / "results.csv")
    text, _ = build(sweep, tmp_path, plots=False)
    assert "**Warning: the sweep holds the same defense, attack and seed under different settings " \
           "(`attack.table_rows_per_query`)" in text
    assert row_of(text, "### Substitute accuracy", "none")[2].endswith("(n=6)")


def test_compute_leaves_out_waiting_for_another_job():
    # a job that waited 30 s for the shared victim's lock did 3 s of work (issue 11)
    record = {"time/victim_s": 2.0, "time/victim_wait_s": 30.0, "time/query_s": 1.0, "victim/trained_here": False}
    assert doc.stage_seconds(record) == 3.0
