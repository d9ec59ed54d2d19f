"""What a run writes into its ``--workdir``, written so a crash never leaves a file a rerun would trust.

Layout: ``config.json`` (the full config), ``metrics.jsonl`` (one JSON object per line), ``results.json``
(written last: its presence means the run finished), ``*.npz`` arrays and ``*.png`` figures. Files are
written to a temporary name and renamed into place, so each is either absent or complete.
"""
from __future__ import annotations

import fcntl
import json
import os
import uuid
from collections.abc import Iterable
from typing import Any

import numpy as np

from jaxprune.errors import ConfigError

RESULTS = "results.json"
CHECKPOINTS = "checkpoints"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
LOCK = ".lock"


def to_jsonable(obj: Any) -> Any:
    """Numpy/JAX scalars and arrays → Python numbers and lists (NaN → None, which JSON can hold)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return to_jsonable(np.asarray(obj).tolist())
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def _atomic_write(path: str, write) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file beside it, then rename it into place; the file
    is created with mode 0o666 less the umask, as ``open`` would create it (``mkstemp``'s 0o600 would hide
    results from collaborators)."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-{uuid.uuid4().hex}-{os.path.basename(path)}")
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(path: str, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    _atomic_write(path, lambda f: f.write(json.dumps(to_jsonable(obj), indent=2).encode()))


def read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def json_line(record: dict) -> str:
    """One line of a ``.jsonl`` file: ``record`` as JSON (:func:`to_jsonable`), newline-terminated."""
    return json.dumps(to_jsonable(record)) + "\n"


def write_jsonl(path: str, records: Iterable[dict]) -> None:
    """Write one JSON object per line, atomically (a rerun after a crash never duplicates lines)."""
    text = "".join(json_line(record) for record in records)
    _atomic_write(path, lambda f: f.write(text.encode()))


def save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed`` of named arrays, atomically."""
    _atomic_write(path, lambda f: np.savez_compressed(f, **{k: np.asarray(v) for k, v in arrays.items()}))


def check_writable(workdir: str) -> None:
    """ConfigError unless ``workdir`` exists as a writable directory or could be created (nothing is created)."""
    path = os.path.abspath(workdir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"--workdir={workdir}: exists and is not a directory")
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not (os.path.isdir(parent) and os.access(parent, os.W_OK | os.X_OK)):
        raise ConfigError(f"--workdir={workdir}: {parent} is not a writable directory")


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Human-readable 'key: old -> new' lines for every key that differs between two config dicts."""
    lines = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            lines += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            lines.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return lines


_held: list[int] = []  # descriptors of the workdir locks this process holds (kept open until it exits)


def hold(workdir: str) -> None:
    """Hold ``workdir`` for this process until it exits: a second run on it is refused (ConfigError) meanwhile.

    An advisory ``flock`` on ``workdir/.lock``, which the kernel releases when the process ends in any way
    (``kill -9`` included), so a killed run never leaves the workdir locked and its rerun resumes at once.
    The file holds the pid of the run that holds it, for the message.
    """
    fd = os.open(os.path.join(workdir, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise ConfigError(f"--workdir={workdir} is in use by another run (pid {holder}); wait for it to finish "
                          "or use another --workdir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _held.append(fd)
