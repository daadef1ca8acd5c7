"""Safe artifact I/O: tensors and JSON only, written atomically, read without unpickling."""
from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import pickle
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import torch


# A temporary file is named ``.<name>.<host>.<pid>.<random>.tmp``: which artifact it is for, and which
# process on which machine writes it, so that a later write of that artifact can tell a temporary
# file left behind by a killed process (SIGKILL, OOM, a lost node) from one a live job is writing.
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
# A temporary file of the former naming (``.<name>.<random>.tmp``, no host and pid) counts as
# stale once it is this old: no write takes an hour.
LEGACY_TMP_AGE_S = 3600.0


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_HOST}.{os.getpid()}.", suffix=".tmp")
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


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Delete the temporary files of ``path`` that no live process is writing; the paths deleted.

    Stale: written by a process of this machine that no longer exists, or of the former naming
    and older than ``LEGACY_TMP_AGE_S``. Kept: this process's own, those of live processes, and
    those of other machines (a cache shared over a network file system: their processes cannot
    be seen from here)."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        middle = tmp.name[len(path.name) + 2:-len(".tmp")].split(".")
        if len(middle) == 3:
            host, pid, _ = middle
            if host != _HOST or not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
                continue
        elif len(middle) == 1:  # the former mkstemp name: ``.<name>.<random>.tmp``
            with contextlib.suppress(FileNotFoundError):
                if time.time() - tmp.stat().st_mtime < LEGACY_TMP_AGE_S:
                    continue
        else:
            continue
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def save_tensors(obj: Any, path: str | Path) -> None:
    """torch.save of tensors, dicts, lists and numbers, via a temporary file and a rename."""
    _atomic_write(Path(path), lambda f: torch.save(obj, f))


class UnreadableArtifact(ValueError):
    """An artifact file that exists but cannot be read back: empty, truncated, corrupt, or not
    a plain tensor/JSON file. The message starts with the path; ``problem`` says what is wrong."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path} {problem}")


def load_tensors(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Read back what save_tensors wrote; never unpickles arbitrary objects.

    Raises ``UnreadableArtifact`` naming the file when it is not a plain tensor file (it holds
    pickled Python objects: refused) or cannot be read (empty, truncated, corrupt);
    ``FileNotFoundError`` when it is missing."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise  # the OS message names the path already
    except pickle.UnpicklingError as err:
        # torch's own text advises weights_only=False, the one thing that must not be done here
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        named = f" (it names {found.group(1)})" if found else ""
        raise UnreadableArtifact(path, "is not a plain tensor file: it holds pickled Python objects"
                                 f"{named}, which are refused because loading them could run code") from None
    except Exception as err:  # noqa: BLE001 - torch reports damage as RuntimeError, EOFError, OSError, KeyError...
        raise UnreadableArtifact(path, f"cannot be read: it is empty, truncated or corrupt ({_first_line(err)})") from None


def save_bytes(data: bytes, path: str | Path) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename."""
    _atomic_write(Path(path), lambda f: f.write(data))


def save_text(text: str, path: str | Path) -> None:
    """Write ``text`` (UTF-8) to ``path`` via a temporary file and a rename."""
    save_bytes(text.encode(), path)


def save_json(obj: Any, path: str | Path) -> None:
    save_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n", path)


def load_json(path: str | Path) -> Any:
    """Parse a JSON file; ``UnreadableArtifact`` naming the file when it is empty or not valid JSON."""
    text = Path(path).read_bytes()
    try:
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        what = "is empty" if not text.strip() else f"is not valid JSON ({_first_line(err)})"
        raise UnreadableArtifact(path, f"{what}: it is truncated or corrupt") from None


def readable_problem(path: str | Path) -> str | None:
    """Why an artifact cannot be used (missing, or unreadable as a tensor/JSON file), or None."""
    path = Path(path)
    if not path.is_file():
        return f"{path} is missing"
    try:
        (load_json if path.suffix == ".json" else load_tensors)(path)
    except UnreadableArtifact as err:
        return str(err)
    return None


def _first_line(err: BaseException) -> str:
    """The exception's type and the first sentence of its text, short enough for one line."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    text = text.split(". ")[0][:160]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def check_writable_dir(value: Any, name: str, *, fix: str) -> Path:
    """A directory that can be written, created if absent; ValueError naming ``name``, the
    value and the problem otherwise (empty, a file on the way, no permission)."""
    text = "" if value is None else str(value)
    if not text.strip():
        # an empty MODELGUARD_CACHE= resolves to "": the cache would land in the current directory
        raise ValueError(f"{name}={text!r} is empty (is MODELGUARD_CACHE set to an empty string?); {fix}")
    path = Path(text)
    for part in (path, *path.parents):
        if part.exists() and not part.is_dir():
            raise ValueError(f"{name}={text!r} is invalid: {part} is a file, not a directory; {fix}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{name}={text!r} cannot be created ({err.strerror}: {err.filename}); {fix}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"{name}={text!r} is not writable; {fix}")
    return path


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
