"""One mechanism for atomic, versioned saves on the local filesystem.

Every persisted intermediate of the project goes through :class:`AtomicVersionedDataset`:
the data is first written to a hidden temporary sibling of its final path and then
renamed into place with ``os.replace``, which POSIX guarantees to be atomic. A save that
is killed half-way therefore leaves only a hidden ``.<name>.tmp-*`` entry that Kedro's
version lookup (``<filepath>/*/<name>``) never matches: no partial version can ever be
loaded, and every earlier version is untouched. The temporary name records the host and
process that writes it; the next save of the same dataset removes the leftovers of
writers on this host that no longer run (a killed run's partial features can be large),
and never touches a save still in progress.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import uuid
from pathlib import Path, PurePosixPath
from typing import Any, Generic, TypeVar

from kedro.io.core import AbstractVersionedDataset, DatasetError, Version

_DI = TypeVar("_DI")
_DO = TypeVar("_DO")


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


class AtomicVersionedDataset(AbstractVersionedDataset[_DI, _DO], Generic[_DI, _DO]):
    """Base class: subclasses implement ``_read(path)`` and ``_write(data, path)``.

    Args:
        filepath: Local path of the dataset (a file or a folder, as the subclass writes).
        version: Kedro ``Version``; set by the catalog when ``versioned: true``.
        load_args: Passed to the subclass's reader.
        save_args: Passed to the subclass's writer.
        metadata: Free-form metadata (kedro-viz shows it); ignored by Kedro itself.
    """

    def __init__(
        self,
        *,
        filepath: str,
        version: Version | None = None,
        load_args: dict[str, Any] | None = None,
        save_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if "://" in str(filepath) and not str(filepath).startswith("file://"):
            raise DatasetError(
                f"{type(self).__name__} writes atomically with a local rename and supports "
                f"local paths only, got '{filepath}'."
            )
        super().__init__(PurePosixPath(str(filepath).removeprefix("file://")), version)
        self._load_args = dict(load_args or {})
        self._save_args = dict(save_args or {})
        self.metadata = metadata

    # -- to implement -------------------------------------------------------------
    def _read(self, path: Path) -> _DO:  # pragma: no cover - abstract
        raise NotImplementedError

    def _write(self, data: _DI, path: Path) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- Kedro API ----------------------------------------------------------------
    def load(self) -> _DO:
        path = Path(self._get_load_path())
        if not path.exists():
            raise DatasetError(f"{self} has nothing at '{path}': run the node that makes it.")
        return self._read(path)

    def save(self, data: _DI) -> None:
        path = Path(self._get_save_path())
        self._sweep()
        atomic_write(path, lambda tmp: self._write(data, tmp))

    def _sweep(self) -> None:
        """Drop what killed saves of this dataset left (never a loadable version)."""
        root = Path(self._filepath)
        if not self._version:
            sweep_dead_temps(root.parent, root.name)
            return
        if not root.is_dir():
            return
        for folder in root.iterdir():
            if folder.is_dir() and sweep_dead_temps(folder, root.name):
                try:
                    folder.rmdir()  # the killed save's version folder, now empty
                except OSError:
                    pass  # something else is in it: keep it

    def _exists(self) -> bool:
        return Path(self._get_load_path()).exists()

    def _describe(self) -> dict[str, Any]:
        return {
            "filepath": str(self._filepath),
            "version": self._version,
            "load_args": self._load_args,
            "save_args": self._save_args,
        }
