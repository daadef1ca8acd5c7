"""Metric tracking through wandb: offline or disabled unless the user asks for online."""
from __future__ import annotations

import os
from typing import Any

ALLOWED_MODES = ("disabled", "offline", "online")


class Tracker:
    """Thin wrapper around one wandb run; ``log`` forwards metrics, ``finish`` closes the run."""

    def __init__(self, mode: str, project: str, run_dir: str, name: str | None, config: dict[str, Any]):
        if mode not in ALLOWED_MODES:
            raise ValueError(f"wandb.mode={mode!r} is invalid: choose one of {', '.join(ALLOWED_MODES)} "
                             "(e.g. wandb.mode=offline)")
        self.mode = mode
        self.run = None
        if mode == "disabled":
            return
        import wandb

        os.makedirs(run_dir, exist_ok=True)
        self.run = wandb.init(mode=mode, project=project, dir=run_dir, name=name, config=config,
                              reinit="finish_previous")

    def log(self, metrics: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))})

    def summary(self, metrics: dict[str, Any]) -> None:
        if self.run is not None:
            for k, v in metrics.items():
                self.run.summary[k] = v

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
