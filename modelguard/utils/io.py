"""Safe artifact I/O: tensors and JSON only, written atomically, read without unpickling."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the whole new one
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_tensors(obj: Any, path: str | Path) -> None:
    """torch.save of tensors, dicts, lists and numbers, via a temporary file and a rename."""
    _atomic_write(Path(path), lambda f: torch.save(obj, f))


def load_tensors(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Read back what save_tensors wrote; never unpickles arbitrary objects."""
    return torch.load(path, map_location=map_location, weights_only=True)


def save_json(obj: Any, path: str | Path) -> None:
    data = (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode()
    _atomic_write(Path(path), lambda f: f.write(data))


def load_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Exclusive advisory lock on ``path`` (created if absent). Concurrent jobs that build the
    same cached artifact take it, then re-check whether another job finished it meanwhile."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
