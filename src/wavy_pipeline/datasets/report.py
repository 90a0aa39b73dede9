"""A report folder (markdown + PNG figures), saved atomically and versioned."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from PIL import Image

from wavy_pipeline.datasets._atomic import AtomicVersionedDataset


class ReportDataset(AtomicVersionedDataset[Mapping[str, Any], dict[str, Path]]):
    """Saves ``{file name: content}`` into one folder: ``str`` → text, ``bytes`` → raw,
    ``PIL.Image`` → PNG, matplotlib ``Figure`` → PNG. Loads ``{file name: path}``."""

    def _read(self, path: Path) -> dict[str, Path]:
        return {p.name: p for p in sorted(path.iterdir())}

    def _write(self, data: Mapping[str, Any], path: Path) -> None:
        path.mkdir(parents=True)
        for name, content in data.items():
            target = path / name
            if isinstance(content, str):
                target.write_text(content, encoding="utf-8")
            elif isinstance(content, bytes):
                target.write_bytes(content)
            elif isinstance(content, Image.Image):
                content.save(target, format="PNG")
            elif isinstance(content, Figure):
                content.savefig(target, format="png", dpi=110, bbox_inches="tight")
            else:
                raise TypeError(f"cannot write {type(content).__name__} to {name}")
