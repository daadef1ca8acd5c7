"""modelguard's one entry point: `python main.py [group=option ...] [key=value ...]`.

Composes conf/main.yaml, runs cfg.stages in order, prints a summary and writes metrics.json
into the run directory. See README.md for the groups and options.

Errors (README "Errors and exit codes"): any failure exits with code 2 and prints one message,
``error: ...``, on stderr (``modelguard.errors``). A job that fails writes ``metrics.json`` with
``status: failed``, the error and its traceback (``failure.json`` where an earlier run of that
directory succeeded), so a sweep's report lists it; ``HYDRA_FULL_ERROR=1`` also prints the
traceback. The task function raises rather than exits: in a multirun (``-m``) that lets Hydra
mark just this job FAILED and run the other jobs (``sys.exit`` would end the whole sweep, or
leave a submitit job without a result); :func:`cli` turns what reaches it into the message."""
from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from modelguard.errors import EXIT_FAILED, explain, one_line
from modelguard.run import format_table, run_experiment, swept_scalars
from modelguard.utils.io import save_json

log = logging.getLogger("modelguard")

# Groups whose option the other choices select (conf/main.yaml: per_defense, per_attack): implied by
# experiment, defense and attack, so not recorded (the report would show each as a column of its own).
DERIVED_GROUPS = ("per_defense", "per_attack")


def recorded_choices(choices) -> dict[str, str]:
    """The option choices a run records as ``choice/<group>``: not Hydra's own, unset or derived ones."""
    return {k: v for k, v in choices.items()
            if not k.startswith("hydra") and v is not None and k not in DERIVED_GROUPS}


# absolute, so the entry point also works imported (tests call cli() in-process)
CONF_DIR = str(Path(__file__).resolve().parent / "conf")

# The error of a failed single run, handed from main() to cli(): raised through Hydra it would
# come with a second line of Hydra's own ("Error executing job with overrides: ...").
_FAILED: list[BaseException] = []


def record_failure(cfg: DictConfig, choices: dict[str, str], err: BaseException) -> None:
    """Write metrics.json with status "failed" (failure.json if an earlier run succeeded here);
    best effort: never hides the original error."""
    try:
        record = {"status": "failed", "error": f"{type(err).__name__}: {explain(err)}",
                  "traceback": traceback.format_exception(err),
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


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="main")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    choices = recorded_choices(hydra_cfg.runtime.choices)
    try:
        record = run_experiment(cfg, choices)
    except Exception as err:
        record_failure(cfg, choices, err)
        log.error("job failed in %s: %s", cfg.paths.output_dir, one_line(explain(err)))
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise
        _FAILED.append(err)
        return None
    print(format_table(record))
    print(f"metrics: {cfg.paths.output_dir}/metrics.json")
    return record.get("surrogate/test_acc")


def cli(argv: list[str] | None = None) -> int:
    """``python main.py ARGS``: 0 on success; on any error one line ``error: ...`` on stderr and
    ``EXIT_FAILED`` (2). ``argv`` (default: ``sys.argv[1:]``) lets tests run it in-process."""
    before = os.environ.get("HYDRA_FULL_ERROR")
    show_traceback = before == "1"
    # Hydra prints its own (long) report and exits 1 unless HYDRA_FULL_ERROR=1 lets the error
    # through; it is set here so every error reaches the one message below.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    saved_argv = sys.argv
    if argv is not None:
        sys.argv = [saved_argv[0] if saved_argv else "main.py", *argv]
    _FAILED.clear()
    try:
        main()
        if _FAILED:
            raise _FAILED[0]
    except SystemExit as stop:  # Hydra's own exits (--help, a bad command-line syntax)
        return 0 if stop.code in (0, None) else EXIT_FAILED
    except Exception as err:  # noqa: BLE001 - every error ends as one message and one exit code
        if show_traceback:
            traceback.print_exception(err)
        print(f"error: {one_line(explain(err))}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        sys.argv = saved_argv
        if before is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = before
    return 0


if __name__ == "__main__":
    sys.exit(cli())
