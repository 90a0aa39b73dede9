"""Demo only: read the colour and shape of the one object in a spoken-shapes image.

Foreground = pixels far from the background colour (the median of the border); colour =
the palette entry nearest to the median foreground pixel; shape = how much of its bounding
box the object fills (square ≈ 1, circle ≈ π/4 ≈ 0.79, upright triangle ≈ 0.5). Checked
against the corpus's own images by a test before it is trusted on generated ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

# Fill-ratio boundaries between the shapes: midway between 0.5 / 0.785 / 1.0 (slightly
# lowered for the square because anti-aliased corners lose a little area).
SQUARE_ABOVE, CIRCLE_ABOVE = 0.88, 0.64


@dataclass
class AttributeJudge:
    """Colour and shape of a single coloured shape on a plain background.

    Attributes:
        palette: colour name → RGB, the colours the corpus draws with.
        foreground_distance: RGB distance from the background above which a pixel
            belongs to the object.
        min_pixels: fewer foreground pixels than this means "no object".
    """

    palette: Mapping[str, tuple[int, int, int]] = field(default_factory=dict)
    foreground_distance: float = 60.0
    min_pixels: int = 12

    def __call__(self, image: Image.Image) -> dict[str, str | float | None]:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
        border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
        background = np.median(border, axis=0)
        mask = np.linalg.norm(pixels - background, axis=2) > self.foreground_distance
        if mask.sum() < self.min_pixels:
            return {"color": None, "shape": None, "fill": 0.0}
        rows, cols = np.nonzero(mask)
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        fill = float(mask.sum() / box)
        shape = "square" if fill > SQUARE_ABOVE else "circle" if fill > CIRCLE_ABOVE else "triangle"
        color = np.median(pixels[mask], axis=0)
        names = list(self.palette)
        distances = [np.linalg.norm(color - np.array(self.palette[n])) for n in names]
        return {"color": names[int(np.argmin(distances))], "shape": shape, "fill": fill}
