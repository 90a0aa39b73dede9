"""Corpus images are decoded once, in one place, the way people see them."""

from __future__ import annotations

import numpy as np
import pytest
from kedro.io.core import DatasetError
from PIL import Image

from wavy_pipeline.data.images import to_rgb
from wavy_pipeline.datasets import ImageFileDataset

RED, BLUE = (220, 20, 20), (20, 20, 220)


def left_red_right_blue(width: int = 40, height: int = 20) -> Image.Image:
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = RED
    pixels[:, width // 2 :] = BLUE
    return Image.fromarray(pixels)


def load(path) -> Image.Image:
    return ImageFileDataset(filepath=str(path)).load()


def close(pixel, colour, tol=30) -> bool:
    return all(abs(int(a) - b) <= tol for a, b in zip(pixel, colour, strict=True))


def test_exif_orientation_is_applied(tmp_path):
    """A photo stored sideways with EXIF Orientation 6 (rotate 90° clockwise to view):
    the red left half is on top once shown upright, where a caption would place it."""
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "sideways.jpg"
    left_red_right_blue().save(path, quality=95, exif=exif)
    image = load(path)
    assert image.mode == "RGB" and image.size == (20, 40)  # (width, height): upright
    pixels = np.asarray(image)
    assert close(pixels[5, 10], RED) and close(pixels[35, 10], BLUE)


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., :3] = 0  # black, but fully transparent...
    rgba[:5, :, :] = (0, 128, 0, 255)  # ...except an opaque green top half
    path = tmp_path / "logo.jpg"  # a PNG named .jpg, as corpora have them
    Image.fromarray(rgba, "RGBA").save(path, format="PNG")
    pixels = np.asarray(load(path))
    assert tuple(pixels[8, 5]) == (255, 255, 255)
    assert tuple(pixels[2, 5]) == (0, 128, 0)
    half = np.zeros((4, 4, 2), np.uint8)
    half[..., 0], half[..., 1] = 0, 128  # grey+alpha: black at 50 % on white
    assert tuple(np.asarray(to_rgb(Image.fromarray(half, "LA")))[0, 0]) == (127, 127, 127)


def test_sixteen_bit_images_are_scaled_not_clipped_to_white(tmp_path):
    grey = np.full((8, 8), 32768, np.uint16)  # mid-grey in 16 bits
    grey[0, 0] = 0
    path = tmp_path / "scan.jpg"
    Image.fromarray(grey).save(path, format="PNG")
    assert Image.open(path).mode.startswith("I")
    pixels = np.asarray(load(path))
    assert tuple(pixels[4, 4]) == (128, 128, 128)
    assert tuple(pixels[0, 0]) == (0, 0, 0)


def test_grayscale_cmyk_and_palette_images_become_rgb(tmp_path):
    for mode, value in (("L", 100), ("CMYK", (0, 255, 255, 0)), ("P", 3)):
        path = tmp_path / f"{mode}.jpg"
        Image.new(mode, (6, 6), value).save(path, format="TIFF" if mode == "CMYK" else "PNG")
        assert load(path).mode == "RGB"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file (0 bytes)"),
        (b"this is not an image", "not an image Pillow can read (20 bytes)"),
    ],
)
def test_unreadable_images_get_a_reason_without_object_addresses(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(DatasetError) as caught:
        load(path)
    assert str(caught.value) == reason
    assert "0x" not in str(caught.value) and "object at" not in str(caught.value)


def test_the_catalog_decodes_corpus_images_with_this_dataset(corpus, project_catalog):
    """Every stage reads corpus images through ``raw_image_files``: it must be this one."""
    exif = Image.Exif()
    exif[0x0112] = 6
    left_red_right_blue().save(corpus / "Flicker8k_Dataset" / "img_000.jpg", exif=exif)
    files = project_catalog(corpus).load("raw_image_files")
    assert files["img_000"]().size == (20, 40)
