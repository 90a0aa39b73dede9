"""One mechanism for atomic, versioned saves on the local filesystem.

Every persisted intermediate of the project goes through :class:`AtomicVersionedDataset`:
the data is first written to a hidden temporary sibling of its final path and then
renamed into place with ``os.replace``, which POSIX guarantees to be atomic. A save that
is killed half-way therefore leaves only a hidden ``.<name>.tmp-*`` entry that Kedro's
version lookup (``<filepath>/*/<name>``) never matches: no partial version can ever be
loaded, and every earlier version is untouched.
"""

from __future__ import annotations

import os
import shutil
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


def _fsync_tree(path: Path) -> None:
    """Flush a file, or every file below a folder, to disk before the rename."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for file in files:
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())


def atomic_write(target: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` and move the result to ``target`` atomically.

    ``write`` may create a file or a folder at ``tmp_path``. If ``target`` already exists
    (only possible for unversioned datasets) it is replaced; the old content is kept until
    the new one is complete.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        write(tmp)
        _fsync_tree(tmp)
        if target.is_dir() and not target.is_symlink():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
            os.replace(tmp, target)
            _remove(old)
        else:
            os.replace(tmp, target)
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
        atomic_write(path, lambda tmp: self._write(data, tmp))

    def _exists(self) -> bool:
        return Path(self._get_load_path()).exists()

    def _describe(self) -> dict[str, Any]:
        return {
            "filepath": str(self._filepath),
            "version": self._version,
            "load_args": self._load_args,
            "save_args": self._save_args,
        }
