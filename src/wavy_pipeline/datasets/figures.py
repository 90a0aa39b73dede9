"""Matplotlib figures as PNG files, saved atomically and versioned."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from PIL import Image

from wavy_pipeline.datasets._atomic import AtomicVersionedDataset


class FigureDataset(AtomicVersionedDataset[Figure, Image.Image]):
    """Saves a matplotlib ``Figure`` as PNG (``save_args`` go to ``savefig``); loads the
    PNG back as a PIL image (for reports and notebooks)."""

    def _read(self, path: Path) -> Image.Image:
        with Image.open(path) as image:
            return image.copy()

    def _write(self, data: Figure, path: Path) -> None:
        options = {"dpi": 120, "bbox_inches": "tight"} | self._save_args
        data.savefig(path, format="png", **options)
