"""Checks of a picture a test has had written: a PNG of the expected size that shows something.

    image = read_png(path, size=(1600, 460))     # (H, W, 3) uint8 RGB; asserts the format, size, not blank
    panel_pixels(image, fig, ax)                 # the pixels of one axes of the matplotlib Figure saved there

A file's size in bytes says nothing about what it shows (a blank 1600×460 PNG is a few kB); these read it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def assert_not_blank(pixels: np.ndarray, what: str = "picture", min_colours: int = 2) -> None:
    """At least `min_colours` distinct colours and a pixel standard deviation above 0."""
    colours = len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0))
    assert pixels.size and colours >= min_colours and pixels.std() > 0, (
        f"{what}: {colours} colour(s) over {pixels.shape[1]}×{pixels.shape[0]} pixels, expected at least "
        f"{min_colours}: it is blank")


def read_png(path, size: tuple[int, int] | None = None, min_size: tuple[int, int] = (1, 1),
             min_colours: int = 2) -> np.ndarray:
    """The PNG at `path` as an (H, W, 3) uint8 RGB array, asserting that it is a PNG, `size` = (width,
    height) exactly when given, else at least `min_size`, and not blank (`assert_not_blank`)."""
    with Image.open(path) as im:
        assert im.format == "PNG", f"{path}: {im.format}, not a PNG"
        rgb = np.asarray(im.convert("RGB"))
    h, w = rgb.shape[:2]
    if size is not None:
        assert (w, h) == tuple(size), f"{path}: {w}×{h} pixels, expected {size[0]}×{size[1]}"
    assert w >= min_size[0] and h >= min_size[1], f"{path}: {w}×{h} pixels, expected at least " \
                                                  f"{min_size[0]}×{min_size[1]}"
    assert_not_blank(rgb, str(path), min_colours)
    return rgb


def figure_size(fig) -> tuple[int, int]:
    """(width, height) in pixels of a matplotlib Figure saved at its own dpi (savefig's default)."""
    w, h = fig.get_size_inches() * fig.dpi
    return int(round(w)), int(round(h))


def panel_pixels(image: np.ndarray, fig, ax) -> np.ndarray:
    """The pixels inside `ax` of `image`, the PNG that `fig` was saved to at its own dpi."""
    assert image.shape[1::-1] == figure_size(fig), "the PNG was not saved from this figure at its dpi"
    box = ax.get_window_extent()  # display pixels of the last draw (the save), origin bottom left
    height = image.shape[0]
    top, bottom = max(int(round(height - box.y1)), 0), int(round(height - box.y0))
    left, right = max(int(round(box.x0)), 0), int(round(box.x1))
    return image[top:bottom, left:right]
