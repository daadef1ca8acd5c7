"""Write a results document (Markdown + PNGs) from a named sweep's results.csv.

    python scripts/results_doc.py outputs/sweeps/embedded --out docs/results-embedded.md \
        --command "bash launchers/embedded_results.sh" --wall-seconds 3512 --started 1767225600

Called by launchers/embedded_results.sh after the sweep and `python -m modelguard.report`, so
rerunning the launcher regenerates the document. It reads only ``<sweep>/results.csv`` (written by
modelguard.report from every job's metrics.json) and, when present, ``<sweep>/.launcher/commands.txt``
(the exact sweep commands the launcher ran). Tables are mean ± sample std over seeds.

The document lists, with their values read from the results themselves:
- metadata: the regenerating command, date, git commit, the launcher's wall time;
- the knobs that differ from the repository defaults (found by composing conf/ for each
  job's choices and comparing), i.e. every setting the launcher changed;
- (1) per defense: protected accuracy and L1 distortion; (2) per attack x defense: substitute
  accuracy and fidelity; (3) adaptive attacks: L1 to the clean answers after and before
  recovery; the trade-off plots of modelguard.report and a recovery plot.
The Markdown file and every PNG are written atomically (temporary file, then rename)."""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import math
import os
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python scripts/results_doc.py` from anywhere
    sys.path.insert(0, str(REPO))

from modelguard.report import mean_std, number, plot_tradeoff  # noqa: E402
from modelguard.utils.io import save_bytes, save_text  # noqa: E402

DEFENSE_ORDER = ("none", "top1", "topk", "rounding", "reverse_sigmoid", "random_noise", "mad", "am", "mld",
                 "none + modelguard_s", "mld + modelguard_s")
ATTACK_ORDER = ("naive", "top1", "s4l", "smoothing", "qpi2", "bayes", "ddae_plus", "ddae")
ADAPTIVE = ("bayes", "ddae_plus", "ddae")
GROUPS = ("dataset", "arch", "victim", "defense", "quantize", "recover", "policy", "attack", "substitute")
# Why a knob may differ from the repository default (which follows the paper's recipe for it).
WHY = {
    "recover.epochs": "the D-DAE/D-DAE+ recovery network trains 200 epochs in the paper and by default; "
                      "cut to fit the grid into about an hour of 2 CPU cores. Fewer epochs make the "
                      "recovery, and so these two attacks, weaker (launchers/README.md has a measurement)",
    "recover.lr_step": "StepLR step scaled with the epochs, so the learning rate still halves at mid-training "
                       "as with 200 epochs and step 100",
    "recover.scheduler.step_size": "StepLR step scaled with the epochs, so the learning rate still halves at "
                                   "mid-training as with 200 epochs and step 100",
    "recover.progress": "no progress bars in the job logs (does not change results)",
    "attack.table_rows_per_query": "size of the attacker's simulation table (default 20 rows per query, "
                                   "the paper's 1e6 rows for 5e4 queries)",
    "attack.table_source.count": "D-DAE shadow models (default 5)",
    "substitute.shadow_epochs": "epochs per D-DAE shadow model (default 3)",
}


# --------------------------------------------------------------------------- reading

def _parse(value: str) -> Any:
    if value == "":
        return None
    if value in ("True", "False"):
        return value == "True"
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


def read_results(csv_path: str | Path) -> list[dict[str, Any]]:
    """results.csv -> one dict per job, numbers parsed, empty cells dropped."""
    with open(csv_path, newline="") as f:
        return [{k: _parse(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def defense_label(row: dict[str, Any]) -> str:
    """The defense as the tables name it: `mld`, or `mld + modelguard_s` with the quantizer in front."""
    name = str(row.get("choice/defense", "?"))
    quantize = row.get("choice/quantize", "none")
    return name if quantize in (None, "none") else f"{name} + {quantize}"


def _ordered(names: Iterable[str], order: tuple[str, ...]) -> list[str]:
    names = set(names)
    return [n for n in order if n in names] + sorted(names - set(order))


# --------------------------------------------------------------------------- formatting

def cell(values: list[float], expected: int, digits: int = 3) -> str:
    """`0.805 ± 0.012`; `(n=2)` appended when the number of jobs is not the number of seeds (some
    failed or are missing, or the sweep holds the same job with other settings); `–` when none."""
    if not values:
        return "–"
    mean, std = mean_std(values)
    text = f"{mean:.{digits}f} ± {std:.{digits}f}"
    return text if len(values) == expected else f"{text} (n={len(values)})"


def md_table(header: list[str], rows: list[list[str]], numeric: bool = True) -> str:
    """A Markdown table; with ``numeric`` every column after the first is right-aligned."""
    rule = ["---"] + (["---:"] if numeric else ["---"]) * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- tables

def _values(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [v for v in (number(r.get(key)) for r in rows) if v is not None]


def defense_table(ok: list[dict[str, Any]], defenses: list[str], seeds: int) -> str:
    """(1) Utility and distortion per defense. The defense stage does not depend on the attack, so
    each seed counts once (the mean over that seed's jobs, which agree)."""
    keys = [("defense/protected_acc", "protected acc"), ("defense/l1_mean", "L1 mean (distortion)"),
            ("defense/l1_max", "L1 max"), ("victim/test_acc", "victim acc")]
    out = []
    for d in defenses:
        per_seed: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        for r in ok:
            if defense_label(r) == d:
                per_seed[r.get("seed")].append(r)
        cells = [f"`{d}`"]
        for key, _ in keys:
            vals = [statistics.fmean(v) for v in (_values(rs, key) for rs in per_seed.values()) if v]
            cells.append(cell(vals, seeds))
        out.append(cells)
    return md_table(["defense"] + [label for _, label in keys], out)


def matrix(ok: list[dict[str, Any]], key: str, defenses: list[str], attacks: list[str], seeds: int) -> str:
    """(2) One metric, rows = defense, columns = attack, mean ± std over seeds."""
    by: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in ok:
        by[(defense_label(r), str(r.get("choice/attack")))].append(r)
    body = [[f"`{d}`"] + [cell(_values(by[(d, a)], key), seeds) for a in attacks] for d in defenses]
    return md_table(["defense \\ attack"] + [f"`{a}`" for a in attacks], body)


def recovery_table(ok: list[dict[str, Any]], defenses: list[str], attacks: list[str], seeds: int) -> str:
    """(3) Adaptive attacks: L1 to the clean answers after recovery vs. as released."""
    by: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in ok:
        by[(defense_label(r), str(r.get("choice/attack")))].append(r)
    header = ["defense"]
    for a in attacks:
        header += [f"`{a}` recovered", f"`{a}` released"]
    body = []
    for d in defenses:
        cells = [f"`{d}`"]
        for a in attacks:
            cells += [cell(_values(by[(d, a)], "recover/l1_mean"), seeds),
                      cell(_values(by[(d, a)], "recover/released_l1_mean"), seeds)]
        body.append(cells)
    return md_table(header, body)


def stage_seconds(record: dict[str, Any]) -> float:
    """A job's compute: its stage times (time/*_s), without time spent waiting for another job's
    lock (time/victim_wait_s: that job's training is counted where it ran)."""
    return sum(v for k, v in record.items()
               if k.startswith("time/") and not k.endswith("_wait_s") and number(v) is not None)


def timing_table(ok: list[dict[str, Any]], attacks: list[str]) -> str:
    """Measured cost per job: the sum of its stage times (time/*_s), mean and max per attack."""
    body = []
    for a in attacks:
        totals = [stage_seconds(r) for r in ok if str(r.get("choice/attack")) == a]
        if totals:
            body.append([f"`{a}`", str(len(totals)), f"{statistics.fmean(totals):.1f}", f"{max(totals):.1f}",
                         f"{sum(totals) / 60:.1f}"])
    return md_table(["attack", "jobs", "mean s/job", "max s/job", "total min"], body)


# --------------------------------------------------------------------------- settings

def repo_defaults(choices: dict[str, str]) -> dict[str, Any]:
    """The flat group.knob values that conf/ gives for these option choices, without any override."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    overrides = [f"{g}={choices[g]}" for g in GROUPS if g in choices and g != "recover"]
    if "experiment" in choices:
        overrides.append(f"experiment={choices['experiment']}")
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        cfg = compose("main", overrides + ["sweep_name=x"])
    flat = {}
    for group in GROUPS:
        node = cfg.get(group)
        if node is None:
            continue
        _flatten_knobs(OmegaConf.to_container(node, resolve=False), group, flat)
    return flat


def _flatten_knobs(raw: dict[str, Any], prefix: str, flat: dict[str, Any]) -> None:
    """Nested nodes (recover.scheduler.step_size) as dotted keys, like metrics.json records them;
    interpolations and _target_/_partial_ keys are left out."""
    for key, value in raw.items():
        if key.startswith("_") or (isinstance(value, str) and value.startswith("${")):
            continue
        if isinstance(value, dict):
            _flatten_knobs(value, f"{prefix}.{key}", flat)
        else:
            flat[f"{prefix}.{key}"] = value


def changed_settings(rows: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """(knob, repository default, value used, attacks) for every knob whose value in the results
    differs from what conf/ composes for the same option choices."""
    combos: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        choices = tuple(sorted((k.removeprefix("choice/"), str(v)) for k, v in r.items() if k.startswith("choice/")))
        combos[choices].append(r)
    found: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for choices, members in combos.items():
        try:
            defaults = repo_defaults(dict(choices))
        except Exception as err:  # noqa: BLE001 - a doc without this section beats no doc
            print(f"results_doc: could not compose the defaults for {dict(choices)}: {err}", file=sys.stderr)
            continue
        for r in members:
            for key, value in r.items():
                if key in defaults and not isinstance(defaults[key], (dict, list)) and value != defaults[key]:
                    if number(value) is not None and number(defaults[key]) is not None \
                            and math.isclose(float(value), float(defaults[key])):
                        continue
                    found[(key, str(defaults[key]), str(value))].add(str(r.get("choice/attack")))
    return [(k, d, v, ", ".join(_ordered(a, ATTACK_ORDER))) for (k, d, v), a in sorted(found.items())]


def mixed_settings(ok: list[dict[str, Any]]) -> list[str]:
    """Config keys that differ between finished jobs of the same defense, attack and seed: the sweep
    holds the same job under other settings (e.g. from a run with other RECOVER_NET), and the tables
    would pool them."""
    by: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in ok:
        by[(defense_label(r), str(r.get("choice/attack")), r.get("seed"))].append(r)
    keys: set[str] = set()
    for members in by.values():
        if len(members) > 1:
            for k in {k for r in members for k in r}:
                if (k.startswith("choice/") or ("." in k and "/" not in k)) and \
                        len({repr(r.get(k)) for r in members}) > 1:
                    keys.add(k)
            if not keys:
                keys.add("run_dir")
    return sorted(keys)


def git_commit(outputs: Iterable[Path] = ()) -> str:
    """HEAD, flagged when tracked files differ from it (the document's own outputs excepted)."""
    exclude = []
    for p in outputs:
        try:
            exclude.append(f":(exclude){p.resolve().relative_to(REPO.resolve()).as_posix()}")
        except ValueError:
            pass  # outside the repository: git does not see it anyway
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *exclude],
                               cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + (" (with uncommitted changes to tracked files)" if dirty else "")


def reused_jobs(sweep_dir: Path, rows: list[dict[str, Any]], started: float | None) -> int | None:
    """Jobs whose last stage finished before this launcher invocation started (a resumed sweep)."""
    if started is None:
        return None
    n = 0
    for r in rows:
        marker = sweep_dir / str(r.get("run_dir", "")) / "stages" / "substitute.json"
        if marker.exists() and marker.stat().st_mtime < started:
            n += 1
    return n


# --------------------------------------------------------------------------- plots

def plot_recovery(ok: list[dict[str, Any]], defenses: list[str], attacks: list[str], path: Path) -> bool:
    """Bars: recover/l1_mean per defense for each adaptive attack (mean ± std over seeds); a black
    tick: the released answers' L1 (before recovery). Lower bars = better recovery."""
    from matplotlib.figure import Figure

    rows = [r for r in ok if str(r.get("choice/attack")) in attacks and number(r.get("recover/l1_mean")) is not None]
    if not rows:
        return False
    fig = Figure(figsize=(max(6.0, 1.1 * len(defenses) + 2), 4.4), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(attacks)
    for i, a in enumerate(attacks):
        xs, ys, es, released = [], [], [], []
        for j, d in enumerate(defenses):
            members = [r for r in rows if str(r.get("choice/attack")) == a and defense_label(r) == d]
            vals = _values(members, "recover/l1_mean")
            if not vals:
                continue
            m, s = mean_std(vals)
            rel = _values(members, "recover/released_l1_mean")
            xs.append(j - 0.4 + width * (i + 0.5)), ys.append(m), es.append(s)
            released.append(statistics.fmean(rel) if rel else float("nan"))
        ax.bar(xs, ys, width, yerr=es, capsize=2, color=f"C{i}", label=f"{a}: after recovery")
        ax.scatter(xs, released, marker="_", s=120, color="black", zorder=3,
                   label="as released (before recovery)" if i == 0 else None)
    ax.set_xticks(range(len(defenses)), defenses, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("mean L1 to the clean answers")
    ax.set_title("Adaptive attacks: L1 to the clean answers, mean ± std over seeds", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_bytes(buf.getvalue(), path)
    return True


# --------------------------------------------------------------------------- document

def build(sweep_dir: Path, out: Path, img_dir: Path, command: str, wall_seconds: float | None,
          started: float | None = None, now: dt.datetime | None = None, settings: bool = True,
          plots: bool = True) -> str:
    """Write the document to ``out`` (and its plots to ``img_dir``); returns its text. ``settings``:
    compose conf/ to list the changed knobs; ``plots``: draw the PNGs (tests of the tables skip both)."""
    rows = read_results(sweep_dir / "results.csv")
    ok = [r for r in rows if r.get("status", "ok") == "ok"]
    failed = [r for r in rows if r.get("status", "ok") != "ok"]
    defenses = _ordered({defense_label(r) for r in rows}, DEFENSE_ORDER)
    attacks = _ordered({str(r.get("choice/attack")) for r in rows}, ATTACK_ORDER)
    adaptive = [a for a in attacks if a in ADAPTIVE or any(
        str(r.get("choice/attack")) == a and number(r.get("recover/l1_mean")) is not None for r in ok)]
    seeds = sorted({r.get("seed") for r in rows if r.get("seed") is not None}, key=str)
    now = now or dt.datetime.now(dt.timezone.utc)

    def rel(p: Path) -> str:
        return Path(os.path.relpath(p.resolve(), out.parent.resolve())).as_posix()

    # Plots first, so the document only links the ones that exist (stale ones are removed).
    drawn_plots: dict[str, Path] = {}
    targets = {"tradeoff_protected_acc": img_dir / "tradeoff_protected_acc.png",
               "tradeoff_l1_mean": img_dir / "tradeoff_l1_mean.png",
               "recovery_l1": img_dir / "recovery_l1.png"}
    if plots:
        drawn = {"tradeoff_protected_acc": plot_tradeoff(rows, targets["tradeoff_protected_acc"],
                                                         "defense/protected_acc"),
                 "tradeoff_l1_mean": plot_tradeoff(rows, targets["tradeoff_l1_mean"], "defense/l1_mean"),
                 "recovery_l1": plot_recovery(ok, defenses, adaptive, targets["recovery_l1"])}
        for name, path in targets.items():
            if drawn[name]:
                drawn_plots[name] = path
            else:
                path.unlink(missing_ok=True)
    plots = drawn_plots

    commands_file = sweep_dir / ".launcher" / "commands.txt"
    commands = commands_file.read_text().strip() if commands_file.exists() else ""
    reused = reused_jobs(sweep_dir, ok, started)
    n = len(seeds)
    first = ok[0] if ok else (rows[0] if rows else {})
    task = "/".join(f"`{first[k]}`" for k in ("choice/dataset", "choice/arch") if k in first)
    title = f"# Results: {len(defenses)} defenses x {len(attacks)} attacks x {n} seeds" + (f" ({task})" if task else "")
    lines = [title, "",
             "Generated by a command, do not edit by hand. To regenerate (resumes the sweep; "
             "finished jobs are reused):",
             "", "```bash", command, "```", "",
             "| | |", "|---|---|",
             f"| date (UTC) | {now.strftime('%Y-%m-%d %H:%M')} |",
             f"| git commit | `{git_commit([out, img_dir])}` |",
             f"| sweep | `{sweep_dir.as_posix()}` ({len(rows)} jobs: {len(ok)} finished, {len(failed)} failed) |",
             f"| seeds | {', '.join(str(s) for s in seeds)} (tables: mean ± sample std over seeds) |"]
    if wall_seconds is not None:
        wall = f"{wall_seconds / 60:.1f} min ({wall_seconds:.0f} s) for this launcher invocation"
        if reused:
            wall += (f"; {reused} of {len(ok)} finished jobs were reused from an earlier invocation, "
                     "so their time is not in it")
        lines.append(f"| wall time | {wall} |")
    if ok:
        core = sum(stage_seconds(r) for r in ok)
        lines.append(f"| compute | {core / 60:.1f} min summed over the jobs' stage times (time/*_s) |")
    lines.append("")
    mixed = mixed_settings(ok)
    if mixed:
        lines += [f"**Warning: the sweep holds the same defense, attack and seed under different settings "
                  f"({', '.join(f'`{k}`' for k in mixed)}); the tables pool them (cells marked n=...). "
                  "Remove the stale job directories or use another NAME.**", ""]
    if commands:
        lines += ["The sweep commands the launcher ran (lanes run side by side; each is one "
                  "`python main.py -m` multirun with the basic launcher):", "", "```bash", commands, "```", ""]

    if settings:
        lines += ["## Settings that differ from the paper", "",
                  "**Changed by the launcher.** Knobs whose value in the results differs from what `conf/` "
                  "gives for the same options (the repository defaults follow the paper's recipe for these knobs):",
                  ""]
        changed = changed_settings(rows)
        if changed:
            lines += [md_table(["knob", "default", "used", "attacks", "why"],
                               [[f"`{k}`", d, v, a, WHY.get(k, "")] for k, d, v, a in changed], numeric=False)]
        else:
            lines += ["None: every knob has its repository default.", ""]
        scale = ", ".join(f"`{k}` = {first[k]}" for k in ("choice/dataset", "choice/arch", "attack.budget",
                                                           "victim.epochs", "substitute.epochs", "choice/policy")
                          if k in first)
        lines += ["**The embedded default itself** is a small-scale stand-in for the paper's setting "
                  f"(README, \"What the default run does\"): {scale}. The paper queries 5e4 times "
                  "(its 1e6-row table is 20 rows per query) on full datasets; every number below is for "
                  "this small task and is not comparable in absolute terms with the paper's.", ""]

    lines += ["## 1. Defenses: utility and distortion", "",
              "Measured on the victim's test set; `protected acc` is the top-1 accuracy of the "
              "released vectors, `L1` the distance between clean and released vectors. "
              "Independent of the attack: each seed counts once.", "",
              defense_table(ok, defenses, n)]
    lines += ["## 2. Attacks x defenses", "",
              "### Substitute accuracy (`surrogate/test_acc`, last epoch; lower = better defense)", "",
              matrix(ok, "surrogate/test_acc", defenses, attacks, n),
              "### Fidelity (`surrogate/fidelity`: top-1 agreement with the undefended victim)", "",
              matrix(ok, "surrogate/fidelity", defenses, attacks, n)]
    if "tradeoff_protected_acc" in plots or "tradeoff_l1_mean" in plots:
        lines += ["### Trade-off plots (from `modelguard.report`)", ""]
        if "tradeoff_l1_mean" in plots:
            lines += [f"![substitute accuracy vs. L1 distortion]({rel(plots['tradeoff_l1_mean'])})", ""]
        if "tradeoff_protected_acc" in plots:
            lines += [f"![substitute accuracy vs. protected accuracy]({rel(plots['tradeoff_protected_acc'])})", ""]
    if adaptive:
        lines += ["## 3. Adaptive attacks: recovery", "",
                  "Mean L1 distance to the victim's clean answers on the attacker's queries: after the "
                  "attacker's recovery (`recover/l1_mean`) and as released (`recover/released_l1_mean`). "
                  "Recovery helps where the first is below the second.", "",
                  recovery_table(ok, defenses, adaptive, n)]
        if "recovery_l1" in plots:
            lines += [f"![recovery L1 per defense]({rel(plots['recovery_l1'])})", ""]
    if ok:
        lines += ["## Cost", "", "Sum of each job's stage times, as measured in the run that computed it "
                  "(victim reused from the cache):", "", timing_table(ok, attacks)]
    if failed:
        lines += ["## Failed jobs", "", f"{len(failed)} job(s) failed (rerun the command to retry them):", ""]
        lines += [f"- `{r.get('run_dir', '?')}`: {r.get('error', 'unknown error')}" for r in failed]
        lines.append("")
    text = "\n".join(lines).rstrip() + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    save_text(text, out)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep with results.csv (python -m modelguard.report)")
    parser.add_argument("--out", type=Path, default=Path("docs/results-embedded.md"))
    parser.add_argument("--img-dir", type=Path, default=None, help="default: the --out path without .md")
    parser.add_argument("--command", default="bash launchers/embedded_results.sh",
                        help="the command that regenerates the document, shown at its top")
    parser.add_argument("--wall-seconds", type=float, default=None)
    parser.add_argument("--started", type=float, default=None, help="launcher start, seconds since the epoch")
    parser.add_argument("--no-settings", action="store_true", help="skip composing conf/ for the settings diff")
    args = parser.parse_args(argv)
    if not (args.sweep_dir / "results.csv").exists():
        parser.error(f"{args.sweep_dir / 'results.csv'} is missing; run python -m modelguard.report {args.sweep_dir}")
    img_dir = args.img_dir or args.out.with_suffix("")
    build(args.sweep_dir, args.out, img_dir, args.command, args.wall_seconds, args.started,
          settings=not args.no_settings)
    print(f"wrote {args.out} (plots in {img_dir})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
