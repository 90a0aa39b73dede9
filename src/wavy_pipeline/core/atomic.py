"""Atomic saves on the local filesystem (plain Python: no Kedro).

Every persisted intermediate of the project is written through :func:`atomic_write` (by
:class:`~wavy_pipeline.datasets._atomic.AtomicVersionedDataset`, and by the models'
``save_pretrained``): the data is first written to a hidden temporary sibling of its final
path and then renamed into place with ``os.replace``, which POSIX guarantees to be atomic.
A save that is killed half-way therefore leaves only a hidden ``.<name>.tmp-*`` entry that
Kedro's version lookup (``<filepath>/*/<name>``) never matches: no partial version can
ever be loaded, and every earlier version is untouched. The temporary name records the
host and process that writes it; the next save of the same dataset removes the leftovers
of writers on this host that no longer run (a killed run's partial features can be
large), and never touches a save still in progress.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import uuid
from pathlib import Path
from typing import Any


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:40]


def _temp_name(target: Path, kind: str) -> str:
    """``.<name>.<kind>-<host>.<pid>.<random>``: hidden, and traceable to its writer."""
    return f".{target.name}.{kind}-{_host()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


_TEMP = re.compile(
    r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<host>[A-Za-z0-9]*)\.(?P<pid>\d+)\.[0-9a-f]{8}$"
)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def sweep_dead_temps(folder: Path, name: str) -> list[Path]:
    """Remove ``folder/.<name>.tmp-*`` / ``.old-*`` entries left by dead writers on this host.

    Entries of live processes, of other hosts (a shared file system) and of unknown
    format are kept, and so is an ``.old-*`` copy while ``<name>`` itself is missing (a
    replace killed between its two renames: the copy is the only one). Returns what was
    removed.
    """
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    host = _host()
    for entry in folder.glob(f".{glob.escape(name)}.*-*"):
        match = _TEMP.match(entry.name)
        if not match or match["name"] != name or match["host"] != host:
            continue
        if match["kind"] == "old" and not (folder / name).exists():
            continue
        if not _pid_alive(int(match["pid"])):
            _remove(entry)
            removed.append(entry)
    return removed


def _fsync_tree(path: Path) -> None:
    """Flush a file, or every file below a folder, to disk before the rename."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for file in files:
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a power cut, not only a kill, keeps it)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass  # some file systems cannot sync a folder
    finally:
        os.close(handle)


def atomic_write(target: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` and move the result to ``target`` atomically.

    ``write`` may create a file or a folder at ``tmp_path``. If ``target`` already exists
    (only possible for unversioned datasets) it is replaced; the old content is kept until
    the new one is complete.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / _temp_name(target, "tmp")
    try:
        write(tmp)
        _fsync_tree(tmp)
        if target.is_dir() and not target.is_symlink():
            old = target.parent / _temp_name(target, "old")
            os.replace(target, old)
            os.replace(tmp, target)
            _remove(old)
        else:
            os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        _remove(tmp)
