"""Running ``python main.py`` in-process for the CLI tests, and fingerprints of finished outputs.

In-process because a subprocess pays torch's import (5-7 s on a busy 2-core machine) for every
one of dozens of bad inputs; ``main.cli`` is exactly what ``python main.py`` runs."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import main as entry

# Files a failed command may touch in a finished run dir: Hydra's record of the last command
# (.hydra/), the log it appends to, and the failure record kept beside a successful metrics.json.
INVOCATION_FILES = (".hydra", "main.log", "failure.json")


@dataclass
class Result:
    rc: int
    out: str
    err: str

    @property
    def message(self) -> str:
        """stderr's one line (asserting that there is exactly one)."""
        lines = [line for line in self.err.splitlines() if line.strip()]
        assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{self.err}"
        assert lines[0].startswith("error: "), lines[0]
        return lines[0]


def run_cli(capsys, monkeypatch, *args: str, cache: Path | None = None, env: dict[str, str] | None = None) -> Result:
    """``python main.py ARGS`` with MODELGUARD_CACHE=cache (or ``env``); returns code and output."""
    with monkeypatch.context() as m:
        if cache is not None:
            m.setenv("MODELGUARD_CACHE", str(cache))
        for key, value in (env or {}).items():
            m.setenv(key, value)
        capsys.readouterr()
        rc = entry.cli(list(args))
        captured = capsys.readouterr()
    return Result(rc, captured.out, captured.err)


def fingerprint(*roots: Path) -> dict[str, str]:
    """sha256 of every file under the roots, except the invocation files (``INVOCATION_FILES``)."""
    digests = {}
    for root in roots:
        for path in sorted(Path(root).rglob("*")):
            rel = path.relative_to(root)
            if path.is_file() and not any(part in INVOCATION_FILES for part in rel.parts):
                digests[f"{root}/{rel}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def snapshot_dir(root: Path) -> set[str]:
    """Every path under root (files and directories), relative: to see what a command created."""
    return {str(p.relative_to(root)) for p in Path(root).rglob("*")} if Path(root).exists() else set()
