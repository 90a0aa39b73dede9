"""A person's recordings: one audio file, or every file of a folder, read lazily."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kedro.io.core import DatasetError

from wavy_pipeline.data.audio import Audio
from wavy_pipeline.datasets.raw import AudioDataset, ReadOnlyFileDataset


class RecordingsDataset(ReadOnlyFileDataset[dict[str, Callable[[], Audio]]]):
    """``{file name: loader}`` for one audio file or every (non-hidden) file of a folder.

    Like a ``PartitionedDataset`` of :class:`AudioDataset` (same decoding, same refusals:
    unreadable, truncated, longer than ``max_seconds``), but ``path`` may also be a single
    file, and nothing is filtered by suffix: whatever libsndfile reads is audio, and a
    file it cannot read reaches the pipeline, which quarantines it with the reason.

    Example:
        ```yaml
        speak_recordings:
          type: wavy_pipeline.datasets.recordings.RecordingsDataset
          path: ${runtime_params:speak.input,${globals:speak_input}}
          max_seconds: 1800
        ```
    """

    _never_written = "recordings are never written"

    def __init__(
        self, *, path: str, max_seconds: float | None = 1800.0, metadata: dict | None = None
    ):
        self._path = Path(path)
        self._max_seconds = max_seconds
        self.metadata = metadata

    def load(self) -> dict[str, Callable[[], Audio]]:
        if self._path.is_file():
            files = [self._path]
        elif self._path.is_dir():
            files = sorted(
                p for p in self._path.rglob("*") if p.is_file() and not p.name.startswith(".")
            )
        else:
            raise DatasetError(
                f"No recording at '{self._path}': pass an audio file or a folder of them "
                "(kedro run --pipelines speak --params speak.input=PATH)."
            )
        root = self._path.parent if self._path.is_file() else self._path
        return {
            str(p.relative_to(root)): AudioDataset(
                filepath=str(p), max_seconds=self._max_seconds
            ).load
            for p in files
        }

    def at(self, path: str | Path) -> RecordingsDataset:
        """The same dataset (same limits) over another file or folder: the web page decodes
        each upload through the catalog's own ``speak_recordings`` entry this way."""
        return type(self)(path=str(path), max_seconds=self._max_seconds, metadata=self.metadata)

    def _exists(self) -> bool:
        return self._path.exists()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "max_seconds": self._max_seconds}
