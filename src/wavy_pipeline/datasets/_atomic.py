"""The base class of the project's persisted datasets: versioned, saved atomically.

The writing itself is plain Python (:func:`wavy_pipeline.core.atomic.atomic_write`); this
module adds what Kedro needs: versioned paths, ``load`` / ``save`` and ``DatasetError``.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any, Generic, TypeVar

from kedro.io.core import AbstractVersionedDataset, DatasetError, Version

from wavy_pipeline.core.atomic import atomic_write, sweep_dead_temps

_DI = TypeVar("_DI")
_DO = TypeVar("_DO")


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
