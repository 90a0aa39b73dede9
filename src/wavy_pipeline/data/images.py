"""Corpus images decoded the way people see them: one place, used by every stage.

``to_rgb`` turns whatever Pillow opened into 8-bit RGB as an image viewer would show it:

* the EXIF orientation is applied (a phone photo stored sideways is shown upright, and
  captions such as "on the left" describe the upright picture);
* transparency is composited on white (a viewer's background), not dropped to black;
* 16-bit (and 32-bit integer or float) pixels are scaled to 8 bits, not clipped to white;
* palette, grayscale and CMYK images are converted to RGB.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_WIDE_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}


def _to_8bit(image: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float grayscale image → mode ``L``, scaled, not clipped."""
    pixels = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        top = 1.0 if pixels.size and np.nanmax(pixels) <= 1.0 else 255.0
    elif image.mode.startswith("I;16") or (pixels.size and pixels.max() > 255):
        top = 65535.0
    else:
        top = 255.0  # mode "I" holding 8-bit values
    scaled = np.clip(np.nan_to_num(pixels) * (255.0 / top), 0, 255)
    return Image.fromarray(np.round(scaled).astype(np.uint8), mode="L")


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB, oriented, with transparency on white (see module doc)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in _WIDE_MODES:
        image = _to_8bit(image)
    if image.mode in _ALPHA_MODES or (
        image.mode in {"P", "L", "RGB"} and "transparency" in image.info
    ):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


# A picture mirrored left to right is described by its caption with these words swapped
# ("on the left" -> "on the right"); top to bottom, by these. The CLIP stand-in's check of
# position (foundation evaluate_clip: an image against its mirror) uses the pairs.
MIRROR_WORDS = {"horizontal": ("left", "right"), "vertical": ("top", "bottom")}
