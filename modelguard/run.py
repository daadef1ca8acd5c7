"""Running one experiment: validate the config, run the stages, write metrics.json; and the Hydra
callback that writes a sweep's report when a multirun ends.

With ``main.py`` and ``modelguard/stages/``, the only code that sees the config."""
from __future__ import annotations

import logging
import time
from typing import Any

import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from modelguard.stages import OUTPUTS, PRECHECKS, STAGES
from modelguard.stages.common import mark_done, output_dir, science_groups, stage_done
from modelguard.stages.validate import stage_names, validate
from modelguard.utils.io import readable_problem, save_json
from modelguard.utils.seed import seed_everything
from modelguard.utils.tracking import Tracker

log = logging.getLogger("modelguard")


def run_experiment(cfg: DictConfig, choices: dict[str, str] | None = None) -> dict[str, Any]:
    """Run cfg.stages in order in cfg.paths.output_dir; returns (and writes) all metrics."""
    validate(cfg)
    seed_everything(cfg.seed, bool(cfg.deterministic))
    torch.backends.cudnn.benchmark = bool(cfg.cudnn_benchmark) and not bool(cfg.deterministic)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    out = output_dir(cfg)
    finished = {name: finished_stage(cfg, name) for name in stage_names(cfg.stages)}
    for name, done in finished.items():
        if done is None and name in PRECHECKS:
            PRECHECKS[name](cfg)
    out.mkdir(parents=True, exist_ok=True)
    choices = dict(choices or {})
    record: dict[str, Any] = {"seed": int(cfg.seed), **{f"choice/{k}": v for k, v in choices.items()}}
    record.update(swept_scalars(cfg))
    tracker = Tracker(cfg.wandb.mode, cfg.wandb.project, str(out), cfg.get("run_name"),
                      OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False))
    metrics: dict[str, Any] = {}
    try:
        for name, done in finished.items():
            if done is not None:
                log.info("stage %s: already done in %s, reusing its results", name, out)
                metrics.update(done)
                continue
            start = time.perf_counter()
            log.info("stage %s ...", name)
            stage_metrics = STAGES[name](cfg)
            # waiting for another job's lock (the shared victim) is not this job's work
            waited = stage_metrics.get(f"time/{name}_wait_s", 0.0)
            stage_metrics[f"time/{name}_s"] = round(time.perf_counter() - start - waited, 3)
            mark_done(cfg, name, stage_metrics)
            tracker.log(stage_metrics)
            metrics.update(stage_metrics)
        record.update(metrics)
        save_json(record, out / "metrics.json")
        tracker.summary(record)
    finally:
        tracker.finish()
    return record


def finished_stage(cfg: DictConfig, name: str) -> dict[str, Any] | None:
    """The metrics of a stage finished in this run dir whose outputs are all there and readable;
    None when it must run (no marker, another config, ``fresh``, or an output gone or damaged)."""
    done = stage_done(cfg, name)
    if done is None:
        return None
    for path in OUTPUTS[name](cfg):
        problem = readable_problem(path)
        if problem is not None:
            log.warning("stage %s: its done marker exists but %s; running it again", name, problem)
            return None
    return done


def swept_scalars(cfg: DictConfig) -> dict[str, Any]:
    """The knobs of every group (defense.eps, attack.budget, policy.compat.clip_space,
    victim.optimizer.lr, ...) as flat dotted entries; nested nodes are flattened."""
    flat: dict[str, Any] = {}
    for group in science_groups(cfg):
        node = cfg[group]
        _flatten(OmegaConf.to_container(node, resolve=False), OmegaConf.to_container(node, resolve=True), group, flat)
    return flat


def _flatten(raw: Any, resolved: dict[str, Any], prefix: str, flat: dict[str, Any]) -> None:
    for key, value in resolved.items():
        if key.startswith("_"):
            continue
        raw_value = raw.get(key) if isinstance(raw, dict) else None
        if isinstance(value, dict):
            _flatten(raw_value, value, f"{prefix}.{key}", flat)
            continue
        derived = isinstance(raw_value, str) and raw_value.startswith("${")  # e.g. dataset.seed: ${seed}
        if not derived and isinstance(value, (int, float, str, bool)):
            flat[f"{prefix}.{key}"] = value


def format_table(record: dict[str, Any]) -> str:
    keys = ["victim/test_acc", "defense/protected_acc", "defense/l1_mean", "defense/l1_max", "queries",
            "recover/l1_mean", "surrogate/test_acc", "surrogate/fidelity", "surrogate/best_test_acc"]
    rows = [(k, record[k]) for k in keys if k in record]
    rows += [(k, v) for k, v in record.items() if k.startswith("time/")]
    width = max(len(k) for k, _ in rows) if rows else 10
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -------"]
    for k, v in rows:
        lines.append(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    return "\n".join(lines)


class ReportCallback(Callback):
    """At the end of a multirun, write results.csv, results.md, paper_table.md and tradeoff.png into
    the sweep dir (registered in conf/hydra/default.yaml under ``callbacks:``).

    Hydra calls on_multirun_end only when every job succeeded; when one failed, the sweep exits
    non-zero before it, so launchers/*.sh also run `python -m modelguard.report` afterwards."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled:
            return
        from modelguard.report import write_report  # matplotlib only when needed

        sweep_dir = config.hydra.sweep.dir
        try:
            written = write_report(sweep_dir)
        except Exception as err:  # noqa: BLE001 - a report problem must not fail a finished sweep
            log.warning("report for %s failed: %s (rerun: python -m modelguard.report %s)", sweep_dir, err, sweep_dir)
            return
        log.info("report: %s", ", ".join(str(p) for p in written.values()))
