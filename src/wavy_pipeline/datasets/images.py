"""The Kedro dataset of :mod:`wavy_pipeline.core.images` (generated images)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from wavy_pipeline.core.images import ImageCollection, write_images
from wavy_pipeline.datasets._atomic import AtomicVersionedDataset


class ImageCollectionDataset(AtomicVersionedDataset[Iterable, ImageCollection]):
    """Saves an iterable of ``(row: dict, image: PIL.Image)``; each row gets a ``file``.

    The iterable may be lazy (a generator from a node): images are written as they come,
    so memory holds one batch, and a failure half-way leaves no version behind.
    """

    def _read(self, path: Path) -> ImageCollection:
        return ImageCollection(path)

    def _write(self, data: Iterable, path: Path) -> None:
        write_images(data, path)
