"""modelguard's one entry point: `python main.py [group=option ...] [key=value ...]`.

Composes conf/main.yaml, runs cfg.stages in order, prints a summary and writes metrics.json
into the run directory. See README.md for the groups and options.

Errors: a job that fails writes ``metrics.json`` with ``status: failed`` and the error (so a
sweep's report lists it). A single run then exits with code 2 for known errors (bad config,
missing file, unavailable device). In a multirun (``-m``) it raises instead: ``sys.exit`` would
end the whole sweep at once (basic launcher) or leave a submitit job without a result, while an
exception lets Hydra mark just this job FAILED, run the other jobs, and then make the sweep
exit non-zero with the first failure's error."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig

from modelguard.run import format_table, run_experiment, swept_scalars
from modelguard.utils.io import save_json

log = logging.getLogger("modelguard")

KNOWN_ERRORS = (ValueError, FileNotFoundError, RuntimeError, InstantiationException)
# Groups whose option the other choices select (conf/main.yaml: per_defense, per_attack): implied by
# experiment, defense and attack, so not recorded (the report would show each as a column of its own).
DERIVED_GROUPS = ("per_defense", "per_attack")


def recorded_choices(choices) -> dict[str, str]:
    """The option choices a run records as ``choice/<group>``: not Hydra's own, unset or derived ones."""
    return {k: v for k, v in choices.items()
            if not k.startswith("hydra") and v is not None and k not in DERIVED_GROUPS}


def record_failure(cfg: DictConfig, choices: dict[str, str], err: BaseException) -> None:
    """Write metrics.json with status "failed" (failure.json if an earlier run succeeded here);
    best effort: never hides the original error."""
    try:
        record = {"status": "failed", "error": f"{type(err).__name__}: {err}",
                  **{f"choice/{k}": v for k, v in choices.items()}}
        try:
            record["seed"] = int(cfg.seed)
        except (TypeError, ValueError):
            record["seed"] = str(cfg.seed)
        try:
            record.update(swept_scalars(cfg))
        except Exception:  # noqa: BLE001 - the config itself may be what is broken
            pass
        out = Path(cfg.paths.output_dir)
        previous = out / "metrics.json"
        # Never overwrite the results of an earlier successful run in this directory.
        keep = previous.exists() and '"status": "failed"' not in previous.read_text()
        save_json(record, out / ("failure.json" if keep else "metrics.json"))
    except Exception as inner:  # noqa: BLE001
        log.warning("could not record the failure in metrics.json: %s", inner)


@hydra.main(version_base="1.3", config_path="conf", config_name="main")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    choices = recorded_choices(hydra_cfg.runtime.choices)
    try:
        record = run_experiment(cfg, choices)
    except Exception as err:
        record_failure(cfg, choices, err)
        if hydra_cfg.mode == RunMode.MULTIRUN or not isinstance(err, KNOWN_ERRORS):
            log.error("job failed in %s: %s", cfg.paths.output_dir, err)
            raise
        log.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(format_table(record))
    print(f"metrics: {cfg.paths.output_dir}/metrics.json")
    return record.get("surrogate/test_acc")


if __name__ == "__main__":
    main()
