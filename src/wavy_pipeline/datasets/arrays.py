"""The Kedro dataset of :mod:`wavy_pipeline.core.arrays` (features and embeddings)."""

from __future__ import annotations

from pathlib import Path

from wavy_pipeline.core.arrays import ArrayStore, ArrayStream, write_arrays
from wavy_pipeline.datasets._atomic import AtomicVersionedDataset


class ArrayStoreDataset(AtomicVersionedDataset[ArrayStream, ArrayStore]):
    """Saves an :class:`ArrayStream` into a folder of ``.npy`` files; loads an ArrayStore.

    Example:
        ```yaml
        speech_features:
          type: wavy_pipeline.datasets.ArrayStoreDataset
          filepath: data/04_feature/speech_features
          versioned: true
        ```
    """

    def _read(self, path: Path) -> ArrayStore:
        return ArrayStore(path)

    def _write(self, data: ArrayStream, path: Path) -> None:
        write_arrays(data, path)
