"""Aggregate a sweep: every job's metrics.json -> results.csv, results.md, paper_table.md and tradeoff.png.

    python -m modelguard.report outputs/sweeps/<sweep_name> [--x defense/l1_mean]

Runs by itself at the end of a multirun (modelguard.run.ReportCallback). Rows come from
the content of each ``metrics.json`` (group choices, seed, swept knobs, metrics); directory
names are never parsed. A job recorded as ``status: failed`` is listed but not aggregated.
paper_table.md is the paper-shaped table (defenses x (policy, attack)): modelguard.report_paper."""
from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from modelguard.utils.io import save_bytes, save_text

# Metrics in the Markdown table (results.csv has all), in this order.
MAIN_METRICS = ("victim/test_acc", "defense/protected_acc", "defense/l1_mean", "queries",
                "surrogate/test_acc", "surrogate/fidelity")
Y_METRIC = "surrogate/test_acc"
X_METRICS = ("defense/protected_acc", "defense/l1_mean")


def collect(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One dict per job: the job's metrics.json plus ``run_dir`` (relative to sweep_dir)."""
    root = Path(sweep_dir)
    rows = []
    for path in sorted(root.glob("**/metrics.json")):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue  # .submitit/, .hydra/: never job results
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # metrics.json is written atomically; this only skips foreign files
        if not isinstance(record, dict):
            continue
        record.setdefault("status", "ok")
        record["run_dir"] = str(path.parent.relative_to(root))
        rows.append(record)
    return rows


def _is_config(key: str) -> bool:
    """Choices (choice/<group>) and swept knobs (<group>.<knob>) describe a job; the rest are results."""
    return key.startswith("choice/") or ("." in key and "/" not in key)


def _columns(rows: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    keys = {k for r in rows for k in r}
    config = sorted(k for k in keys if _is_config(k))
    config = [k for k in config if k.startswith("choice/")] + [k for k in config if not k.startswith("choice/")]
    metrics = [k for k in MAIN_METRICS if k in keys]
    metrics += sorted(k for k in keys if k not in metrics and not _is_config(k)
                      and k not in ("seed", "status", "error", "traceback", "run_dir"))
    return config, metrics


def _varying(rows: list[dict[str, Any]], keys: Iterable[str]) -> list[str]:
    return [k for k in keys if len({json.dumps(r.get(k), sort_keys=True) for r in rows}) > 1]


def _informative(rows: list[dict[str, Any]], config: list[str]) -> list[str]:
    """Config columns that vary, leaving out knobs an option choice already implies
    (attack=top1 sets attack.hard_label): a knob counts only if it varies within one set of choices."""
    choices = [k for k in config if k.startswith("choice/")]
    by_choice: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_choice[json.dumps([r.get(k) for k in choices])].append(r)
    keep = _varying(rows, choices)
    for k in config:
        if k not in choices and any(_varying(members, [k]) for members in by_choice.values()):
            keep.append(k)
    return keep


def number(value: Any) -> float | None:
    """A metric value as a float; None for bools, strings and NaN (absent or failed)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(value) else float(value)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return _num(value)
    return str(value)


def _num(value: float) -> str:
    """A number for a table cell: whole numbers as integers (budgets and query counts: 10000,
    not 1e+04), others to 4 significant digits."""
    if math.isfinite(value) and float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    config, metrics = _columns(rows)
    fields = config + ["seed", "status"] + metrics + ["error", "run_dir"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in sorted(rows, key=lambda r: r["run_dir"]):
        writer.writerow({k: row.get(k, "") for k in fields})
    save_text(buf.getvalue(), path)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Mean ± std over seeds, one line per combination of the config columns that vary."""
    ok = [r for r in rows if r.get("status") == "ok"]
    failed = [r for r in rows if r.get("status") != "ok"]
    lines = []
    if ok:
        config, metrics = _columns(ok)
        metrics = [m for m in MAIN_METRICS if m in metrics]
        keys = ["choice/attack", "choice/defense"]
        keys = [k for k in keys if k in config] + [k for k in _informative(ok, config) if k not in keys]
        groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
        for r in ok:
            groups[tuple(json.dumps(r.get(k)) for k in keys)].append(r)
        header = [k.removeprefix("choice/") for k in keys] + ["seeds"] + metrics
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for group in sorted(groups, key=lambda g: [str(v) for v in g]):
            members = groups[group]
            cells = [_fmt(members[0].get(k)) for k in keys] + [str(len(members))]
            for m in metrics:
                values = [v for v in (number(r.get(m)) for r in members) if v is not None]
                if not values:
                    cells.append("")
                elif len(values) == 1:
                    cells.append(_fmt(values[0]))
                else:
                    mean, std = mean_std(values)
                    cells.append(f"{_num(mean)} ± {std:.2g}")
            lines.append("| " + " | ".join(cells) + " |")
    else:
        lines.append("No finished jobs.")
    if failed:
        lines += ["", f"**{len(failed)} failed job(s)** (rerun the sweep command to retry them):", ""]
        lines += [f"- `{r['run_dir']}`: {r.get('error', 'unknown error')}" for r in failed]
    return "\n".join(lines) + "\n"


def write_markdown(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    text = f"# Sweep `{title}`\n\n{len(rows)} job(s); values are mean ± std over seeds.\n\n" + markdown_table(rows)
    save_text(text, path)


def curve_splits(rows: list[dict[str, Any]], config: list[str]) -> list[str]:
    """Config keys, besides attack, defense, quantizer and defense strength, that split a defense
    into several curves of the trade-off plot: those that vary within one attack's panel. A key the
    attack fixes (recover=network for attack=ddae) varies only across panels and splits nothing."""
    by_attack: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_attack[str(r.get("choice/attack"))].append(r)
    return [k for k in _informative(rows, config)
            if k not in ("choice/attack", "choice/defense", "choice/quantize")
            and not k.startswith(("defense.", "quantize."))
            and any(_varying(members, [k]) for members in by_attack.values())]


def plot_tradeoff(rows: list[dict[str, Any]], path: Path, x_metric: str = X_METRICS[0]) -> bool:
    """Utility/damage trade-off: one panel per attack, one curve per defense across its swept
    strength (the defense.*/quantize.* knobs that vary), mean ± std over seeds as error bars.
    Returns False (and writes nothing) when no finished job has both metrics."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    ok = [r for r in rows if r.get("status") == "ok"
          and number(r.get(x_metric)) is not None and number(r.get(Y_METRIC)) is not None]
    if not ok:
        return False
    config, _ = _columns(ok)
    attacks = sorted({str(r.get("choice/attack")) for r in ok})
    fig = Figure(figsize=(5.2 * len(attacks), 4.4), layout="constrained")
    axes = fig.subplots(1, len(attacks), sharey=True, squeeze=False)[0]
    # A curve is a defense (plus the quantizer in front of it, when one is used); its strength is
    # the defense.*/quantize.* knobs that vary among its own jobs. Any other config that varies
    # within one attack's panel (besides seed) splits a defense into several curves (curve_splits).
    use_quantize = any(r.get("choice/quantize", "none") != "none" for r in ok)
    others = curve_splits(ok, config)

    def curve_key(r: dict[str, Any]) -> tuple:
        name = str(r.get("choice/defense"))
        if use_quantize:
            name += f" + {r.get('choice/quantize', 'none')}"
        return (name,) + tuple(_fmt(r.get(k)) for k in others)

    by_curve: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in ok:
        by_curve[curve_key(r)].append(r)
    strength = {c: _varying(rs, [k for k in config if k.startswith(("defense.", "quantize."))])
                for c, rs in by_curve.items()}
    color = {key: f"C{i % 10}" for i, key in enumerate(sorted(by_curve))}  # the same in every panel
    handles = {}
    for ax, attack in zip(axes, attacks):
        curves: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
        for r in ok:
            if str(r.get("choice/attack")) == attack:
                curves[curve_key(r)].append(r)
        for curve, members in sorted(curves.items()):
            defense, knobs = curve[0], strength[curve]
            points: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
            for r in members:
                points[tuple(r.get(k) for k in knobs)].append(r)
            order = sorted(points, key=lambda p: [(number(v) if number(v) is not None else str(v)) for v in p])
            xs, ys, xerr, yerr = [], [], [], []
            for p in order:
                mx, sx = mean_std([float(r[x_metric]) for r in points[p]])
                my, sy = mean_std([float(r[Y_METRIC]) for r in points[p]])
                xs.append(mx), ys.append(my), xerr.append(sx), yerr.append(sy)
            label = defense + "".join(f", {k.split('/', 1)[-1]}={v}" for k, v in zip(others, curve[1:]))
            if knobs:
                label += f" ({', '.join(k.split('.', 1)[1] for k in knobs)})"
            h = ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, marker="o", capsize=3, color=color[curve], label=label)
            handles.setdefault(label, h)
            for p, x, y in zip(order, xs, ys):
                if knobs:
                    ax.annotate(",".join(_fmt(v) for v in p), (x, y), textcoords="offset points",
                                xytext=(4, 4), fontsize=7)
        ax.set_title(f"attack = {attack}")
        ax.set_xlabel(f"{x_metric}  ({'utility, higher is better' if 'acc' in x_metric else 'perturbation, lower is better'})")
        ax.grid(True, alpha=0.3)
    fig.suptitle("Utility vs. extraction: mean ± std over seeds; point labels = swept defense strength",
                 fontsize=10)
    axes[0].set_ylabel(f"{Y_METRIC}  (attack success, lower is better)")
    fig.legend(list(handles.values()), list(handles.keys()), loc="outside lower center",
               ncol=min(4, len(handles)), fontsize=8, title="defense (swept knob)")
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    save_bytes(buf.getvalue(), path)
    return True


def write_report(sweep_dir: str | Path, x_metric: str = X_METRICS[0]) -> dict[str, Path]:
    """Write results.csv, results.md and, when there is data for them, paper_table.md and
    tradeoff.png into sweep_dir."""
    from modelguard.report_paper import write_paper_table  # it imports this module's helpers

    root = Path(sweep_dir)
    rows = collect(root)
    written = {"csv": root / "results.csv", "md": root / "results.md"}
    write_csv(rows, written["csv"])
    write_markdown(rows, written["md"], root.name)
    if write_paper_table(rows, root / "paper_table.md", root.name):
        written["paper"] = root / "paper_table.md"
    else:
        (root / "paper_table.md").unlink(missing_ok=True)  # no stale table beside fresh results
    if plot_tradeoff(rows, root / "tradeoff.png", x_metric):
        written["png"] = root / "tradeoff.png"
    else:
        (root / "tradeoff.png").unlink(missing_ok=True)  # never leave a stale plot beside fresh tables
    return written


def _cli(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m modelguard.report", description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="e.g. outputs/sweeps/<sweep_name>")
    parser.add_argument("--x", default=X_METRICS[0], choices=X_METRICS, help="x axis of tradeoff.png")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.error(f"{args.sweep_dir} is not a directory")
    rows = collect(args.sweep_dir)
    written = write_report(args.sweep_dir, args.x)
    failed = sum(r["status"] != "ok" for r in rows)
    print(f"{len(rows)} job(s), {failed} failed: " + ", ".join(str(p) for p in written.values()))
    return 1 if not rows else 0


if __name__ == "__main__":
    raise SystemExit(_cli())
