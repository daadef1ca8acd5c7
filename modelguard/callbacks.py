"""Hydra callbacks, registered in conf/hydra/default.yaml under `callbacks:`."""
from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("modelguard")


class ReportCallback(Callback):
    """At the end of a multirun, write results.csv, results.md and tradeoff.png into the sweep dir.

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
