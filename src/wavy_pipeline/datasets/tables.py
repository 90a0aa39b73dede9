"""Tables and JSON documents, saved atomically and versioned."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io.core import DatasetError

from wavy_pipeline.datasets._atomic import AtomicVersionedDataset


class ParquetTableDataset(AtomicVersionedDataset[pd.DataFrame, pd.DataFrame]):
    """A pandas DataFrame stored as one Parquet file.

    Example:
        ```yaml
        utterances:
          type: wavy_pipeline.datasets.ParquetTableDataset
          filepath: data/02_intermediate/utterances.parquet
          versioned: true
        ```
    """

    def _read(self, path: Path) -> pd.DataFrame:
        frame = pd.read_parquet(path, **self._load_args)
        frame.attrs["filepath"] = str(path)  # which version it is, for messages
        return frame

    def _write(self, data: pd.DataFrame, path: Path) -> None:
        if not isinstance(data, pd.DataFrame):
            raise TypeError(f"{type(self).__name__} saves DataFrames, got {type(data).__name__}")
        data.to_parquet(path, index=False, **self._save_args)


class JSONDataset(AtomicVersionedDataset[Any, Any]):
    """A JSON document (metrics, reports for machines); keys are kept in order.

    Args:
        optional: a dataset with no saved version yet loads as None (an input that a
            node can do without, e.g. the held-out metrics before ``heldout`` ever ran).
        **kwargs: as :class:`AtomicVersionedDataset`.
    """

    def __init__(self, *, optional: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._optional = optional

    def load(self) -> Any:
        if self._optional:
            try:
                path = Path(self._get_load_path())
            except DatasetError:  # versioned, and no version saved yet
                return None
            if not path.exists():
                return None
        return super().load()

    def _describe(self) -> dict[str, Any]:
        return super()._describe() | {"optional": self._optional}

    def _read(self, path: Path) -> Any:
        return json.loads(path.read_text(encoding="utf-8"))

    def _write(self, data: Any, path: Path) -> None:
        options = {"indent": 2, "allow_nan": False} | self._save_args
        path.write_text(json.dumps(data, **options) + "\n", encoding="utf-8")
