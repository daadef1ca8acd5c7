"""What the command line prints when a run fails: one message per error, and one exit code.

``python main.py`` exits with ``EXIT_FAILED`` (2) on any error and prints ``error: <message>``
on stderr. Messages of this project's own checks already name the bad value, what is
allowed and the fix; :func:`explain` passes them through and rewrites the few foreign
errors whose own text does not say what to change (SLURM's gres refusal, a multirun
without a name). The traceback goes to the failed job's record (``traceback`` in
metrics.json or failure.json); ``HYDRA_FULL_ERROR=1`` also prints it."""
from __future__ import annotations

import os
import re

EXIT_FAILED = 2

# Errors whose text is meant for the user: the project's checks (ValueError), missing files and
# devices (OSError, RuntimeError), Hydra's and OmegaConf's config errors. Anything else is a bug,
# and its message says so.
_EXPECTED = ("ValueError", "OSError", "RuntimeError", "HydraException", "OmegaConfBaseException")

_GRES = re.compile(r"invalid generic resource \(gres\) specification", re.IGNORECASE)


def explain(err: BaseException) -> str:
    """A message for ``err`` that says what to change; the error's own text when it does."""
    chain = _chain(err)
    text = "\n".join(str(e) for e in chain)
    if _GRES.search(text):
        asked = os.environ.get("MODELGUARD_GPUS", "1 (the default)")
        return ("SLURM refused the job's GPU request (sbatch: Invalid generic resource (gres) specification): "
                f"cluster=slurm asks for hydra.launcher.gpus_per_node={asked} GPU(s) per job "
                "(conf/cluster/slurm.yaml reads MODELGUARD_GPUS), and the partition has no such GPUs. "
                "On a CPU-only partition set MODELGUARD_GPUS=null (or hydra.launcher.gpus_per_node=null); "
                "for GPUs choose a GPU partition with MODELGUARD_PARTITION=<name>")
    missing = [e for e in chain if type(e).__name__ == "MissingMandatoryValue"]
    if missing and "sweep_name" in str(missing[0]):
        return ("a multirun (-m) needs a name: add sweep_name=<name> to the command (its jobs go to "
                "outputs/sweeps/<name>/, and the same command with the same name resumes the sweep)")
    if missing:
        return f"{_first_lines(missing[0])}: a value marked ??? must be given on the command line (key=value)"
    # Hydra's wrapper adds nothing when the constructor already explained itself
    if type(err).__name__ == "InstantiationException" and isinstance(err.__cause__, ValueError):
        return str(err.__cause__)
    if not any(cls.__name__ in _EXPECTED for cls in type(err).__mro__):
        return (f"unexpected {type(err).__name__}: {err} (a bug, please report it; the traceback is in the failed "
                "job's metrics.json or failure.json, and HYDRA_FULL_ERROR=1 prints it)")
    return str(err) if str(err).strip() else type(err).__name__


def one_line(message: str) -> str:
    """A multi-line message on one line: Hydra's indented option lists become comma lists, and its
    config search path (noise for a user) is dropped."""
    message = message.split("\nConfig search path:")[0]
    parts: list[str] = []
    for line in message.splitlines():
        if not line.strip():
            continue
        item = " ".join(line.split())  # the alignment of a multi-line message means nothing on one line
        if line.startswith("\t") and parts and parts[-1].endswith(":"):
            parts[-1] += " " + item
        elif line.startswith("\t") and parts:
            parts[-1] += ", " + item
        else:
            parts.append(item)
    text = ""
    for part in parts:
        text += ("" if not text else " " if text.endswith((".", ":", ";")) else "; ") + part
    return text


def _chain(err: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while err is not None and err not in seen:
        seen.append(err)
        err = err.__cause__ or err.__context__
    return seen


def _first_lines(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
