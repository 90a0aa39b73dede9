"""Named arrays with one row per key (utterance or image): features and embeddings.

Written as they are computed, row block by row block, into ``.npy`` files created with
their final shape (``numpy.lib.format.open_memmap``); read back memory-mapped. Memory stays
bounded by one block, whatever the number of rows. Plain Python (no Kedro):
:class:`~wavy_pipeline.datasets.ArrayStoreDataset` versions and saves them atomically.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


@dataclass
class ArrayStream:
    """What a node returns to have arrays computed lazily and written block by block.

    Attributes:
        keys: One key per row, in row order.
        specs: ``{name: (row shape, dtype)}`` of every array.
        blocks: Iterable of ``(start_row, {name: array of shape (n, *row_shape)})``.
        meta: JSON-able facts to keep with the arrays (model, layers, pooling, …).
    """

    keys: Sequence[str]
    specs: dict[str, tuple[tuple[int, ...], str]]
    blocks: Any
    meta: dict[str, Any] = field(default_factory=dict)


class ArrayStore:
    """Read side of :func:`write_arrays`' folder: ``store["name"]`` is a memory-mapped
    (rows, …) array."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.meta = json.loads((self.path / "meta.json").read_text())
        self.keys: list[str] = pd.read_parquet(self.path / "keys.parquet")["key"].tolist()
        self._row = {key: i for i, key in enumerate(self.keys)}

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, name: str) -> np.ndarray:
        return np.load(self.path / f"{name}.npy", mmap_mode="r")

    @property
    def names(self) -> list[str]:
        return sorted(self.meta["specs"])

    def rows(self, keys: Sequence[str]) -> np.ndarray:
        """Row numbers of ``keys``; a clear KeyError names the first missing one."""
        missing = [key for key in keys if key not in self._row]
        if missing:
            raise KeyError(f"{len(missing)} keys not in {self.path.name}, e.g. {missing[0]!r}")
        return np.array([self._row[key] for key in keys], dtype=np.int64)

    def take(self, name: str, keys: Sequence[str]) -> np.ndarray:
        """The rows of ``keys`` of array ``name``, in memory."""
        return np.asarray(self[name][self.rows(keys)])

    def digest(self, sample_rows: int = 64) -> str:
        """A short content fingerprint: keys, every array's shape and dtype, and the bytes of
        up to ``sample_rows`` evenly spaced rows of each. Cheap on any corpus size, and it
        changes when the arrays are recomputed by another model (e.g. new encoders of the
        same size), which ``meta`` alone does not show."""
        h = hashlib.sha256("\n".join(self.keys).encode())
        for name in self.names:
            array = self[name]
            h.update(f"{name}{array.shape}{array.dtype}".encode())
            if len(array):
                rows = np.unique(np.linspace(0, len(array) - 1, sample_rows).astype(np.int64))
                h.update(np.ascontiguousarray(array[rows]).tobytes())
        return h.hexdigest()[:16]


def write_arrays(stream: ArrayStream, path: Path) -> None:
    """Write ``stream`` into a new folder ``path`` (``<name>.npy`` per array, ``keys.parquet``,
    ``meta.json``), a block at a time: what :class:`ArrayStore` reads back."""
    path.mkdir(parents=True)
    n = len(stream.keys)
    arrays = {
        name: np.lib.format.open_memmap(
            path / f"{name}.npy", mode="w+", dtype=np.dtype(dtype), shape=(n, *shape)
        )
        for name, (shape, dtype) in stream.specs.items()
    }
    written = 0
    for start, block in stream.blocks:
        for name, values in block.items():
            arrays[name][start : start + len(values)] = values
        written += len(next(iter(block.values())))
    if written != n:
        raise ValueError(f"the stream produced {written} rows for {n} keys")
    for array in arrays.values():
        array.flush()
    del arrays
    pd.DataFrame({"key": list(stream.keys)}).to_parquet(path / "keys.parquet", index=False)
    specs = {name: [list(shape), dtype] for name, (shape, dtype) in stream.specs.items()}
    meta = stream.meta | {"specs": specs, "rows": n}
    (path / "meta.json").write_text(json.dumps(meta, indent=2, default=str))


def gather(stream: ArrayStream, name: str) -> np.ndarray:
    """The rows of one array of a lazy :class:`ArrayStream`, in memory, in key order."""
    shape, dtype = stream.specs[name]
    out = np.empty((len(stream.keys), *shape), dtype=dtype)
    for start, block in stream.blocks:
        out[start : start + len(block[name])] = block[name]
    return out
