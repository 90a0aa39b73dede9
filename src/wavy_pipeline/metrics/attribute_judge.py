"""Demo only: read the colour, shape, size and position of the one object in a
spoken-shapes image.

Foreground: on a plain background, the pixels far from the background colour (the median
of the border), largest connected blob; on a textured one (the border's pixels spread widely), the largest connected blob
of pixels near one palette colour that does not touch the border. Colour = the palette
entry nearest to the median foreground pixel; shape = how much of its bounding box the
object fills (square ≈ 1, circle ≈ π/4 ≈ 0.79, upright triangle ≈ 0.5); size = the bounding
box's longer side as a fraction of the image; position = where the object's centroid lies
(within ``center_radius`` of the middle: centre; else the farther axis decides). Checked
against the corpus's own images by a test before it is trusted on generated ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from scipy import ndimage

# Fill-ratio boundaries between the shapes: midway between 0.5 / 0.785 / 1.0 (slightly
# lowered for the square because anti-aliased corners lose a little area).
SQUARE_ABOVE, CIRCLE_ABOVE = 0.88, 0.64
NOTHING = {"color": None, "shape": None, "size": None, "position": None, "fill": 0.0}


@dataclass
class AttributeJudge:
    """Colour, shape, size and position of a single coloured shape on a background.

    Attributes:
        palette: colour name → RGB, the colours the corpus draws with.
        foreground_distance: RGB distance from the background above which a pixel
            belongs to the object (plain backgrounds).
        min_pixels: fewer foreground pixels than this means "no object".
        textured_border: RGB distance from their median that a tenth of the border's
            pixels exceed when the background is textured.
        palette_distance: on a textured background, how close to a palette colour an
            object pixel must be.
        large_above: bounding-box side (fraction of the image) above which an object is
            "large" (the demo draws small shapes 14–20 px, large ones 27–36 px of 64).
        center_radius: centroid offset from the middle (fraction of the image) under
            which an object is in the "center".
    """

    palette: Mapping[str, tuple[int, int, int]] = field(default_factory=dict)
    foreground_distance: float = 60.0
    min_pixels: int = 12
    textured_border: float = 30.0
    palette_distance: float = 80.0
    large_above: float = 0.36
    center_radius: float = 0.094

    def __call__(self, image: Image.Image) -> dict[str, str | float | None]:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
        mask = self._foreground(pixels)
        if mask is None or mask.sum() < self.min_pixels:
            return dict(NOTHING)
        rows, cols = np.nonzero(mask)
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        fill = float(mask.sum() / (height * width))
        shape = "square" if fill > SQUARE_ABOVE else "circle" if fill > CIRCLE_ABOVE else "triangle"
        color = np.median(pixels[mask], axis=0)
        names = list(self.palette)
        distances = [np.linalg.norm(color - np.array(self.palette[n])) for n in names]
        extent = max(height / pixels.shape[0], width / pixels.shape[1])
        return {
            "color": names[int(np.argmin(distances))] if names else None,
            "shape": shape,
            "size": "large" if extent > self.large_above else "small",
            "position": self._position(
                rows.mean() / pixels.shape[0], cols.mean() / pixels.shape[1]
            ),
            "fill": fill,
        }

    def _foreground(self, pixels: np.ndarray) -> np.ndarray | None:
        border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
        background = np.median(border, axis=0)
        spread = float(np.percentile(np.linalg.norm(border - background, axis=1), 90))
        if spread <= self.textured_border or not self.palette:
            return _largest_blob(
                np.linalg.norm(pixels - background, axis=2) > self.foreground_distance
            )
        colours = np.array(list(self.palette.values()), dtype=np.float64)
        distance = np.linalg.norm(pixels[:, :, None, :] - colours[None, None], axis=3)
        near = np.where(distance.min(axis=2) < self.palette_distance, distance.argmin(axis=2), -1)
        best, best_size = None, 0
        for i in range(len(colours)):  # the largest blob of one palette colour that does
            labels, n = ndimage.label(near == i)  # not touch the border (the background does)
            if n == 0:
                continue
            edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
            sizes = ndimage.sum(near == i, labels, index=range(1, n + 1))
            sizes[edge[edge > 0] - 1] = 0
            if sizes.max() > best_size:
                best, best_size = labels == 1 + int(np.argmax(sizes)), float(sizes.max())
        return best

    def _position(self, row: float, col: float) -> str:
        dy, dx = row - 0.5, col - 0.5
        if max(abs(dx), abs(dy)) < self.center_radius:
            return "center"
        if abs(dx) >= abs(dy):
            return "left" if dx < 0 else "right"
        return "top" if dy < 0 else "bottom"


def _largest_blob(mask: np.ndarray) -> np.ndarray:
    """The largest connected region of ``mask`` (drops specks of compression noise)."""
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = ndimage.sum(mask, labels, index=range(1, n + 1))
    return labels == 1 + int(np.argmax(sizes))
