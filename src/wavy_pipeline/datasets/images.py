"""A collection of images (one PNG each) with an index table: versioned, atomic, streamed.

PartitionedDataset cannot be versioned as a whole; generated images must be one version
per run, so this dataset writes ``index.parquet`` + ``images/<file>.png`` into one folder
that appears under its final name only when every image is written.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd
from PIL import Image

from wavy_pipeline.datasets._atomic import AtomicVersionedDataset


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


class ImageCollectionDataset(AtomicVersionedDataset[Iterable, ImageCollection]):
    """Saves an iterable of ``(row: dict, image: PIL.Image)``; each row gets a ``file``.

    The iterable may be lazy (a generator from a node): images are written as they come,
    so memory holds one batch, and a failure half-way leaves no version behind.
    """

    def _read(self, path: Path) -> ImageCollection:
        return ImageCollection(path)

    def _write(self, data: Iterable, path: Path) -> None:
        folder = path / "images"
        folder.mkdir(parents=True)
        rows = []
        for number, (row, image) in enumerate(data):
            file = row.get("file") or f"{number:06d}.png"
            image.save(folder / file, format="PNG")
            rows.append({**row, "file": file})
        pd.DataFrame(rows).to_parquet(path / "index.parquet", index=False)
