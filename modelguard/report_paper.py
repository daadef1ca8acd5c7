"""The paper-shaped table of a sweep (experiment-grid.md §5): rows = defenses with their protected
accuracy, columns = one per (query strategy, attack) pair run, cells = substitute accuracy (and a
second table of the same shape for fidelity), mean ± std over seeds.

Written by ``modelguard.report.write_report`` as ``paper_table.md``. Rows come from the content of
each job's ``metrics.json`` (``collect``), as for results.md. Knobs other than defense, quantizer,
policy, attack and seed that vary between jobs of one cell (``defense.eps=0.5,1.0``) are never
averaged over: the file then holds one pair of tables per value (``split_keys``)."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from modelguard.report import _columns, _informative, _varying, mean_std, number
from modelguard.utils.io import save_text

# The grid's order (experiment-grid.md §3); anything else follows, sorted.
DEFENSE_ORDER = ("none", "reverse_sigmoid", "mad", "am", "top1", "rounding", "mld")
DEFENSE_NAMES = {"none": "None", "reverse_sigmoid": "Reverse Sigmoid", "mad": "MAD", "am": "AM",
                 "top1": "Top-1", "rounding": "Rounding", "mld": "ModelGuard-W", "topk": "Top-k",
                 "random_noise": "Random noise"}
QUANTIZE_NAMES = {"modelguard_s": "ModelGuard-S"}
POLICY_ORDER = ("knockoff", "jbtr3")
ATTACK_ORDER = ("naive", "top1", "s4l", "smoothing", "ddae", "ddae_plus", "bayes", "qpi2")

CELL_KEYS = ("choice/defense", "choice/quantize", "choice/policy", "choice/attack")
PROTECTED = "defense/protected_acc"
TABLES = (("Substitute accuracy", "surrogate/test_acc"), ("Fidelity", "surrogate/fidelity"))
NOT_RUN = "–"


def _rank(value: str, order: tuple[str, ...]) -> tuple[int, str]:
    return (order.index(value), "") if value in order else (len(order), value)


def row_key(r: dict[str, Any]) -> tuple[str, str]:
    return str(r.get("choice/defense")), str(r.get("choice/quantize", "none"))


def column_key(r: dict[str, Any]) -> tuple[str, str]:
    return str(r.get("choice/policy", "?")), str(r.get("choice/attack"))


def row_order(key: tuple[str, str]) -> tuple:
    """none ... mld, then ModelGuard-S (defense=none behind quantize=modelguard_s), then any other pair."""
    defense, quantize = key
    if quantize == "none":
        return (0, _rank(defense, DEFENSE_ORDER))
    if key == ("none", "modelguard_s"):
        return (1,)
    return (2, quantize, _rank(defense, DEFENSE_ORDER))


def column_order(key: tuple[str, str]) -> tuple:
    return (_rank(key[0], POLICY_ORDER), _rank(key[1], ATTACK_ORDER))


def row_label(key: tuple[str, str]) -> str:
    """'ModelGuard-W (mld)', 'ModelGuard-S', 'ModelGuard-W (mld) + ModelGuard-S'."""
    defense, quantize = key
    name = f"{DEFENSE_NAMES.get(defense, defense)} ({defense})"
    if quantize == "none":
        return name
    quantizer = QUANTIZE_NAMES.get(quantize, f"quantize={quantize}")
    return quantizer if defense == "none" else f"{name} + {quantizer}"


def by_cell(rows: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """The jobs of each cell, by (defense, quantizer, policy, attack)."""
    cells: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        cells[row_key(r) + column_key(r)].append(r)
    return cells


def split_keys(rows: list[dict[str, Any]]) -> list[str]:
    """Config keys, besides the cell's own (defense, quantizer, policy, attack) and the seed, that
    vary among the jobs of one cell: one table per value, never an average over them. A key that
    only follows from a choice (attack=top1 sets attack.hard_label, recover=network comes with
    attack=ddae) varies across cells only and splits nothing."""
    config, _ = _columns(rows)
    cells = by_cell(rows).values()
    return [k for k in _informative(rows, config)
            if k not in CELL_KEYS and any(_varying(members, [k]) for members in cells)]


def _value(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def partitions(rows: list[dict[str, Any]], keys: list[str]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(heading, rows) per combination of the split keys' values. A job without a key (defense.eps
    for defense=none) is in every table of that key: the knob does not apply to it."""
    if not keys:
        return [("", rows)]
    values = [sorted({json.dumps(r[k], sort_keys=True) for r in rows if k in r},
                     key=lambda v: (number(json.loads(v)) is None, number(json.loads(v)) or 0.0, v))
              for k in keys]
    combos: list[tuple[str, ...]] = [()]
    for vs in values:
        combos = [c + (v,) for c in combos for v in vs]
    out = []
    for combo in combos:
        members = [r for r in rows
                   if all(k not in r or json.dumps(r[k], sort_keys=True) == v for k, v in zip(keys, combo))]
        if any(k in r for r in members for k in keys):  # not only the jobs the knobs do not apply to
            heading = ", ".join(f"{k.removeprefix('choice/')} = {_value(json.loads(v))}" for k, v in zip(keys, combo))
            out.append((heading, members))
    return out


def cell(values: list[float], n_max: int, failed: int = 0) -> str:
    """'0.703' for one value, '0.712 ± 0.013' for several (sample std), '(n=2)' when the cell has
    fewer values than the table's fullest cell, 'failed' when its jobs all failed, '–' when not run."""
    if not values:
        return "failed" if failed else NOT_RUN
    mean, std = mean_std(values)
    text = f"{mean:.3f}" if len(values) == 1 else f"{mean:.3f} ± {std:.3f}"
    return text + (f" (n={len(values)})" if len(values) < n_max else "")


def protected_values(members: list[dict[str, Any]]) -> list[float]:
    """One protected accuracy per seed: the defended victim's accuracy does not depend on the attack,
    so a seed counts once however many attacks ran against it (the mean where its jobs disagree)."""
    by_seed: dict[str, list[float]] = defaultdict(list)
    for r in members:
        v = number(r.get(PROTECTED))
        if v is not None:
            by_seed[json.dumps(r.get("seed"))].append(v)
    return [mean_std(vs)[0] for _, vs in sorted(by_seed.items())]


def table(rows: list[dict[str, Any]], metric: str) -> list[str]:
    """Markdown lines of one table: rows = (defense, quantizer) pairs, columns = (policy, attack) pairs."""
    columns = sorted({column_key(r) for r in rows}, key=column_order)
    defenses = sorted({row_key(r) for r in rows}, key=row_order)
    jobs = by_cell(rows)

    def values(members: Iterable[dict[str, Any]]) -> list[float]:
        return [v for v in (number(r.get(metric)) for r in members if r.get("status") == "ok") if v is not None]

    n_max = max((len(values(m)) for m in jobs.values()), default=0)
    protected = {d: protected_values([r for r in rows if row_key(r) == d and r.get("status") == "ok"])
                 for d in defenses}
    protected_max = max((len(v) for v in protected.values()), default=0)
    header = ["defense", "protected acc"] + [f"{p} / {a}" for p, a in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for d in defenses:
        cells = [row_label(d), cell(protected[d], protected_max, failed=1)]
        for c in columns:
            members = jobs.get(d + c, [])
            cells.append(cell(values(members), n_max, failed=sum(r.get("status") != "ok" for r in members)))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def paper_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The jobs a paper table can place: those that record a defense and an attack."""
    return [r for r in rows if "choice/defense" in r and "choice/attack" in r]


def paper_markdown(rows: list[dict[str, Any]], title: str) -> str | None:
    """The whole paper_table.md; None when no finished job records a defense and an attack."""
    rows = paper_rows(rows)
    if not any(r.get("status") == "ok" for r in rows):
        return None
    keys = split_keys(rows)
    seeds = sorted({r.get("seed") for r in rows if r.get("status") == "ok"}, key=str)
    failed = sum(r.get("status") != "ok" for r in rows)
    text = [f"# Paper table: sweep `{title}`", "",
            f"{len(rows) - failed} finished job(s), seed(s) {', '.join(str(s) for s in seeds)}"
            + (f"; {failed} failed (listed in results.md)" if failed else "") + ".", "",
            "- Rows: defenses, with the defended victim's accuracy (`defense/protected_acc`, one value per seed).",
            "- Columns: query strategy (policy) / attack.",
            "- Cells: mean ± std over seeds (one seed: the value); (n=k): fewer seeds than the table's "
            "fullest cell; –: not run (in the paper grid: its skip rules); failed: every job of the cell failed."]
    if keys:
        text.append("- Knobs that vary within a cell, never averaged over: one pair of tables per value "
                    f"(a job without the knob is in every table): {', '.join(f'`{k}`' for k in keys)}.")
    text.append("")
    level = "##" if not keys else "###"
    for heading, members in partitions(rows, keys):
        if heading:
            text += [f"## {heading}", ""]
        for name, metric in TABLES:
            text += [f"{level} {name} (`{metric}`)", ""] + table(members, metric) + [""]
    return "\n".join(text)


def write_paper_table(rows: list[dict[str, Any]], path: Path, title: str) -> bool:
    """Write paper_table.md atomically; False (and nothing written) when there is nothing to place."""
    text = paper_markdown(rows, title)
    if text is None:
        return False
    save_text(text, path)
    return True
