"""modelguard's one entry point: `python main.py [group=option ...] [key=value ...]`.

Composes conf/main.yaml, runs cfg.stages in order, prints a summary and writes metrics.json
into the run directory. See README.md for the groups and options."""
from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from modelguard.run import format_table, run_experiment

log = logging.getLogger("modelguard")


@hydra.main(version_base="1.3", config_path="conf", config_name="main")
def main(cfg: DictConfig) -> float | None:
    choices = {k: v for k, v in HydraConfig.get().runtime.choices.items()
               if not k.startswith("hydra") and v is not None}
    try:
        record = run_experiment(cfg, choices)
    except (ValueError, FileNotFoundError, RuntimeError, InstantiationException) as err:
        log.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(format_table(record))
    print(f"metrics: {cfg.paths.output_dir}/metrics.json")
    return record.get("surrogate/test_acc")


if __name__ == "__main__":
    main()
