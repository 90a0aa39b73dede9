"""A collection of images (one PNG each) with an index table, written as they come.

``index.parquet`` + ``images/<file>.png`` in one folder. Plain Python (no Kedro):
:class:`~wavy_pipeline.datasets.ImageCollectionDataset` versions and saves it atomically
(``PartitionedDataset`` cannot be versioned as a whole, and generated images must be one
version per run).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd
from PIL import Image


class ImageCollection:
    """Read side: ``index`` (one row per image, with its ``file``) and lazy image loading."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.index = pd.read_parquet(self.path / "index.parquet")

    def __len__(self) -> int:
        return len(self.index)

    def image(self, file: str) -> Image.Image:
        with Image.open(self.path / "images" / file) as image:
            return image.convert("RGB")


def write_images(items: Iterable[tuple[dict, Image.Image]], path: Path) -> None:
    """Write ``(row, image)`` pairs into a new folder ``path`` as they come (memory holds
    one); each row gets a ``file`` (its own, or a running number): what
    :class:`ImageCollection` reads back."""
    folder = path / "images"
    folder.mkdir(parents=True)
    rows = []
    for number, (row, image) in enumerate(items):
        file = row.get("file") or f"{number:06d}.png"
        image.save(folder / file, format="PNG")
        rows.append({**row, "file": file})
    pd.DataFrame(rows).to_parquet(path / "index.parquet", index=False)
