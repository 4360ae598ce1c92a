"""Checks shared by the HEALPix backbones: per-stage widths and depths (the U-Nets), input maps (all)."""

from __future__ import annotations

from typing import Sequence

from ..grid import format_base_pixels


def check_stages(nside: int, widths: Sequence[int], depths: Sequence[int], unit: str = "channel") -> tuple:
    """(widths, depths) as int tuples, or ValueError: non-empty, of equal length, at least one `unit` and one
    block per stage, and nside >= 2^(stages - 1) so that the last stage exists."""
    widths, depths = tuple(int(w) for w in widths), tuple(int(d) for d in depths)
    if not widths or len(widths) != len(depths) or min(depths) < 1 or min(widths) < 1:
        raise ValueError(f"widths={widths} and depths={depths} must be non-empty, of equal length, with "
                         f"at least one {unit} and one block per stage")
    stages = len(widths)
    if nside < 1 << (stages - 1):
        raise ValueError(f"nside={nside} is too small for {stages} stages: the last stage needs nside ≥ "
                         f"2^(stages−1) = {1 << (stages - 1)}")
    return widths, depths


def check_healpix_input(model, x) -> None:
    """ValueError unless x is (B, model.in_chans, len(model.faces)·model.nside²), naming the expected shape."""
    n = len(model.faces) * model.nside ** 2
    if x.dim() != 3 or x.shape[1] != model.in_chans or x.shape[2] != n:
        raise ValueError(f"expected x of shape (B, {model.in_chans}, {n}) (in_chans, len(faces)·nside² for "
                         f"nside={model.nside}, faces={format_base_pixels(model.faces)}), got {tuple(x.shape)}")
