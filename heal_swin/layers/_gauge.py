"""Gauge-equivariant convolution on the HEALPix face charts with C4-regular fields.

Each face is a square chart (x towards the north-east, y towards the north-west); a gauge is the
choice of one of its four rotations per face. A C4-regular field of C channels holds, at every
pixel, 4 values per channel: the responses of one filter turned by 0, 1, 2, 3 counter-clockwise
quarter-turns in the face's chart. Turning a face's chart by k quarter-turns moves its pixels
(`grid.turn_xy`) and cyclically shifts the 4 orientations by k; the layers here commute with that
for any per-face choice of k (Cohen, Weiler, Kicanaoglu, Welling 2019, gauge equivariant CNNs),
so what the network computes does not depend on how the charts are turned.

Layout: scalar (trivial) fields x (B, C, N), regular fields x (B, C, 4, N), N = len(faces)·nside²,
NESTED, faces ascending. A convolution gathers each face with a one-pixel border from its
neighbours (one precomputed index: the neighbour's pixel, its orientations shifted by the edge's
quarter-turns, zero for faces outside the set and for the corner cell where three faces meet),
runs one batched `conv2d` over all faces (raster rows = x, columns = y), and permutes the result
back to NESTED order. Kernels are rotated with transposes and flips only, so both ONNX exporters
handle the graph.

Read top-down: field types → index tables → padding → convolutions → pointwise layers, pooling.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..grid import (check_base_pixels, check_nside, check_permutation, extended_xyf, face_transitions,
                    format_base_pixels, invert_permutation, nest2xyf, turn_xy, xyf2nest)
from ._pool import NestedPool, NestedUnpool

__all__ = ["FieldType", "trivial", "regular", "gauge_permutation", "pad_tables", "FacePadding",
           "FaceUnraster", "share_face_tables", "ChartConv", "LiftingConv", "GroupConv", "FieldNorm", "FieldPool",
           "FieldUnpool", "OrientationPool", "rotate_kernel"]

ORDER = 4  # C4: quarter-turns of a square chart


# --------------------------------------------------------------------------- field types


def _check_turns(turns, faces: tuple[int, ...]) -> tuple[int, ...]:
    """Per-face chart turns (one int per face of `faces`), reduced mod 4; None = all zero."""
    if turns is None:
        return (0,) * len(faces)
    turns = tuple(int(t) % ORDER for t in turns)
    if len(turns) != len(faces):
        raise ValueError(f"turns={turns} must give one quarter-turn count per face of "
                         f"faces={format_base_pixels(faces)} ({len(faces)} values)")
    return turns


@dataclass(frozen=True)
class FieldType:
    """A feature type on the face charts: `channels` fields of `kind` "trivial" (scalars, one value
    per pixel) or "regular" (C4-regular, 4 orientation values per pixel).

    Tensors of this type: trivial (B, C, N), regular (B, C, 4, N), N = len(faces)·nside², NESTED.
    `transform` applies a gauge transformation (each face's chart turned by its own quarter-turns).
    """

    kind: str
    channels: int

    def __post_init__(self):
        if self.kind not in ("trivial", "regular"):
            raise ValueError(f"FieldType kind={self.kind!r} must be 'trivial' or 'regular'")
        if int(self.channels) != self.channels or self.channels < 1:
            raise ValueError(f"FieldType channels={self.channels!r} must be a positive integer")

    @property
    def orientations(self) -> int:
        """Values per channel and pixel: 1 (trivial) or 4 (regular)."""
        return ORDER if self.kind == "regular" else 1

    @property
    def size(self) -> int:
        """Values per pixel: channels · orientations."""
        return self.channels * self.orientations

    def __str__(self) -> str:
        return f"{self.channels}x{self.kind}"

    def shape(self, batch: int, n: int) -> tuple[int, ...]:
        return (batch, self.channels, ORDER, n) if self.kind == "regular" else (batch, self.channels, n)

    def check(self, x: torch.Tensor, n: int, where: str = "input") -> None:
        """Raise naming expected and actual shapes unless x is a (?, ...) tensor of this type over n pixels."""
        want = self.shape(x.shape[0] if x.dim() else 0, n)
        if tuple(x.shape) != want:
            raise ValueError(f"{where}: expected a {self} field of shape (B, {', '.join(map(str, want[1:]))}), "
                             f"got {tuple(x.shape)}")

    def transform(self, x: torch.Tensor, nside: int, faces: Sequence[int], turns: Sequence[int]) -> torch.Tensor:
        """The gauge transformation that turns face faces[i]'s chart by turns[i] quarter-turns
        (counter-clockwise): pixels move with the chart (`grid.turn_xy`) and, for regular
        fields, orientation r becomes r + turns[i] (mod 4). x: this type over `faces` at `nside`."""
        faces = check_base_pixels(faces)
        turns = _check_turns(turns, faces)
        n = len(faces) * nside ** 2
        self.check(x, n, "FieldType.transform")
        index = torch.tensor(gauge_permutation(nside, faces, turns), device=x.device)
        x = x.index_select(-1, index)
        if self.kind == "trivial":
            return x
        face_of = torch.as_tensor(np.repeat(turns, nside ** 2), device=x.device)
        src = (torch.arange(ORDER, device=x.device)[:, None] - face_of[None, :]) % ORDER  # (4, N)
        return torch.gather(x, 2, src.expand(*x.shape[:2], ORDER, n))


def trivial(channels: int) -> FieldType:
    return FieldType("trivial", channels)


def regular(channels: int) -> FieldType:
    return FieldType("regular", channels)


# --------------------------------------------------------------------------- index tables


@functools.lru_cache(maxsize=64)
def gauge_permutation(nside: int, faces: tuple[int, ...], turns: tuple[int, ...]) -> np.ndarray:
    """int64 (N,): turned = x[..., index] moves every face's pixels with its chart turned by
    `turns` quarter-turns (the pixel at new chart coordinates (x', y') is the one at
    turn_xy(x', y', −k) in the old chart). Read-only."""
    nside = check_nside(nside)
    x, y = _face_xy(nside)
    parts = []
    for i, k in enumerate(turns):
        sx, sy = turn_xy(nside, x, y, -k)
        parts.append(i * nside ** 2 + _local_nest(nside, sx, sy))
    index = np.concatenate(parts)
    check_permutation(index, invert_permutation(index), f"gauge turns {turns}")
    index.flags.writeable = False
    return index


def _face_xy(nside: int):
    """(x, y) of a face's pixels in NESTED order, int64 (nside²,) each."""
    x, y, _ = nest2xyf(nside, np.arange(nside ** 2, dtype=np.int64))
    return np.asarray(x, dtype=np.int64), np.asarray(y, dtype=np.int64)


def _local_nest(nside: int, x, y) -> np.ndarray:
    """The nested index of (x, y) inside its face (face 0's global index)."""
    return np.asarray(xyf2nest(nside, x, y, np.zeros_like(x)), dtype=np.int64)


@functools.lru_cache(maxsize=64)
def pad_tables(nside: int, faces: tuple[int, ...], radius: int = 1, turns: tuple[int, ...] | None = None):
    """Where each cell of the padded face rasters reads from: (source, shift), int64 arrays of
    shape (F, S, S), S = nside + 2·radius, F = len(faces); cell [i, h, w] is chart coordinate
    (x, y) = (h − radius, w − radius) of face faces[i] (in the gauge `turns`).

    source: the local NESTED pixel over `faces` (0 … N − 1), or −1 where the cell must read zero
    (the face there is not in `faces`, or none lies there: beyond the vertices where three faces
    meet). shift: k such that orientation r of the cell reads orientation (r + k) mod 4 of the
    source pixel, k = the quarter-turns of the transition into the source's chart (0 inside the
    face and where source is −1). Read-only.
    """
    nside = check_nside(nside)
    faces = check_base_pixels(faces)
    turns = _check_turns(turns, faces)
    if int(radius) != radius or not 1 <= radius <= nside:
        raise ValueError(f"radius={radius!r} must be an integer in [1, nside={nside}] (a border from the "
                         "neighbouring faces only)")
    size = nside + 2 * radius
    cx, cy = np.meshgrid(np.arange(size) - radius, np.arange(size) - radius, indexing="ij")
    position = np.full(12, -1, dtype=np.int64)
    position[list(faces)] = np.arange(len(faces))
    gauge = np.zeros(12, dtype=np.int64)
    gauge[list(faces)] = turns
    _, edge_turns = face_transitions()
    source = np.empty((len(faces), size, size), dtype=np.int64)
    shift = np.zeros((len(faces), size, size), dtype=np.int64)
    for i, (f, t) in enumerate(zip(faces, turns)):
        # the cell in the face's own (unturned) chart, then across the edge into the neighbour's
        sx, sy = turn_xy(nside, cx, cy, -t)
        dx = np.where(sx < 0, -1, np.where(sx >= nside, 1, 0))
        dy = np.where(sy < 0, -1, np.where(sy >= nside, 1, 0))
        tx, ty, tf = extended_xyf(nside, sx, sy, np.full_like(sx, f))
        ok = tf >= 0
        tf = np.where(ok, tf, 0)
        ok &= position[tf] >= 0
        # into the neighbour's turned chart: a vector turns by −t, the edge's k, then the neighbour's turns
        nx, ny = turn_xy(nside, tx, ty, gauge[tf])
        local = position[tf] * nside ** 2 + _local_nest(nside, np.clip(nx, 0, nside - 1), np.clip(ny, 0, nside - 1))
        k = (edge_turns[f, dx + 1, dy + 1] + gauge[tf] - t) % ORDER
        source[i] = np.where(ok, local, -1)
        shift[i] = np.where(ok, k, 0)
    source.flags.writeable = shift.flags.writeable = False
    return source, shift


@functools.lru_cache(maxsize=64)
def _gather_index(nside: int, faces: tuple[int, ...], radius: int, turns: tuple[int, ...], orientations: int):
    """One flat gather index over a field flattened to (…, orientations·N + 1) (the last entry a
    zero): int64 (F·orientations·S·S,) in the order (face, orientation, h, w)."""
    source, shift = pad_tables(nside, faces, radius, turns)
    n = len(faces) * nside ** 2
    zero = orientations * n
    r = np.arange(orientations)[None, :, None, None]
    index = ((r + shift[:, None]) % orientations) * n + source[:, None]
    index = np.where(source[:, None] >= 0, index, zero)
    return np.ascontiguousarray(index.reshape(-1))


@functools.lru_cache(maxsize=64)
def _raster_to_nest(nside: int, n_faces: int) -> np.ndarray:
    """int64 (N,): nested = raster[..., index] for rasters (F, nside, nside) flattened, rows = x."""
    x, y = _face_xy(nside)
    index = (np.arange(n_faces)[:, None] * nside ** 2 + (x * nside + y)[None]).reshape(-1)
    check_permutation(index, invert_permutation(index), f"raster -> NESTED at nside {nside}")
    return index


# --------------------------------------------------------------------------- padding


class FacePadding(nn.Module):
    """A field over `faces` -> each face's raster with a `radius`-pixel border read from its
    neighbours, by one gather with a precomputed index (a non-persistent buffer).

    x: trivial (B, C, N) or regular (B, C, 4, N), NESTED -> (B·F, C·o, S, S), o = 1 or 4 (channel
    c·o + r), S = nside + 2·radius, rows = chart x, columns = chart y, faces outermost in the batch.
    `turns`: the gauge (per-face chart turns; None = the standard charts). The table does not
    depend on C: any number of channels of the field's kind passes (see `share_face_tables`).
    """

    def __init__(self, field: FieldType, nside: int, faces: Sequence[int], radius: int = 1,
                 turns: Sequence[int] | None = None):
        super().__init__()
        self.field, self.nside, self.faces = field, check_nside(nside), check_base_pixels(faces)
        self.turns, self.radius = _check_turns(turns, self.faces), int(radius)
        self.n = len(self.faces) * self.nside ** 2
        index = _gather_index(self.nside, self.faces, self.radius, self.turns, field.orientations)
        self.register_buffer("index", torch.as_tensor(index), persistent=False)

    @property
    def key(self) -> tuple:
        """What the table depends on: (kind, nside, faces, radius, turns)."""
        return ("pad", self.field.kind, self.nside, self.faces, self.radius, self.turns)

    def extra_repr(self) -> str:
        turned = f", turns={self.turns}" if any(self.turns) else ""
        return (f"{self.field.kind}, nside={self.nside}, faces={format_base_pixels(self.faces)}, "
                f"radius={self.radius}{turned}")

    def forward(self, x):
        FieldType(self.field.kind, x.shape[1] if x.dim() > 1 else 1).check(x, self.n, type(self).__name__)
        # shapes by flatten/unflatten only, so a traced graph keeps its batch dimension dynamic
        o, F_, S = self.field.orientations, len(self.faces), self.nside + 2 * self.radius
        flat = F.pad(x.flatten(2) if o > 1 else x, (0, 1))  # the zero that absent cells read
        cells = flat.index_select(2, self.index).unflatten(2, (F_, o, S, S))
        return cells.transpose(1, 2).flatten(0, 1).flatten(1, 2)


class FaceUnraster(nn.Module):
    """Face rasters back to a NESTED field: (B·F, C·o, nside, nside) -> trivial (B, C, N) (o = 1)
    or regular (B, C, 4, N) (o = 4), by one permutation (a non-persistent buffer); any C."""

    def __init__(self, field: FieldType, nside: int, faces: Sequence[int]):
        super().__init__()
        self.field, self.nside, self.faces = field, check_nside(nside), check_base_pixels(faces)
        self.register_buffer("index", torch.as_tensor(_raster_to_nest(self.nside, len(self.faces))),
                             persistent=False)

    def forward(self, y):
        F_, o = len(self.faces), self.field.orientations
        y = y.unflatten(0, (-1, F_)).flatten(3).unflatten(2, (-1, o))  # (B, F, C, o, n²)
        y = y.permute(0, 2, 3, 1, 4).flatten(3).index_select(3, self.index)
        return y if o > 1 else y.squeeze(2)


    @property
    def key(self) -> tuple:
        return ("unraster", self.field.kind, self.nside, self.faces)

    def extra_repr(self) -> str:
        return f"{self.field.kind}, nside={self.nside}, faces={format_base_pixels(self.faces)}"


def share_face_tables(module: nn.Module) -> int:
    """Make the `FacePadding` and `FaceUnraster` submodules of `module` with the same geometry
    (their `key`: kind, nside, faces, radius, gauge) one module each. Their tables do not depend
    on the channels, so a network then holds each table once: after `.to(device)` (a shared
    module is moved once) and in an exported ONNX file. Returns how many submodules were replaced."""
    canonical: dict = {}
    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, (FacePadding, FaceUnraster)):
                first = canonical.setdefault(child.key, child)
                if first is not child:
                    setattr(parent, name, first)
                    replaced += 1
    return replaced


# --------------------------------------------------------------------------- convolutions


def rotate_kernel(w: torch.Tensor, k: int) -> torch.Tensor:
    """The kernel turned k quarter-turns counter-clockwise in the chart: w_k[..., a, b] =
    w(R^−k u) at offset u = (a − r, b − r) (rows = x, columns = y). Transposes and flips only."""
    for _ in range(k % ORDER):
        w = w.transpose(-1, -2).flip(-2)
    return w


def _roll_orientations(w: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """w rolled by k along `dim` (size 4): result[s] = w[s − k]. Slices and a concatenation."""
    k %= ORDER
    if k == 0:
        return w
    n = w.shape[dim]
    return torch.cat([w.narrow(dim, n - k, k), w.narrow(dim, 0, n - k)], dim=dim)


class _GaugeConvBase(nn.Module):
    def __init__(self, in_type: FieldType, out_type: FieldType, nside: int, faces: Sequence[int],
                 kernel_size: int, turns, bias: bool):
        super().__init__()
        if kernel_size % 2 != 1 or kernel_size < 3:
            raise ValueError(f"kernel_size={kernel_size} must be odd and at least 3 (a centred kernel)")
        self.in_type, self.out_type, self.kernel_size = in_type, out_type, int(kernel_size)
        self.nside, self.faces = check_nside(nside), check_base_pixels(faces)
        radius = kernel_size // 2
        self.pad = FacePadding(in_type, nside, self.faces, radius, turns)
        self.unraster = FaceUnraster(out_type, nside, self.faces)
        self.bias = nn.Parameter(torch.zeros(out_type.channels)) if bias else None

    def extra_repr(self) -> str:
        return (f"{self.in_type} -> {self.out_type}, kernel={self.kernel_size}, nside={self.nside}, "
                f"faces={format_base_pixels(self.faces)}, bias={self.bias is not None}")

    def _kernel(self):
        raise NotImplementedError

    def forward(self, x):
        self.in_type.check(x, self.pad.n, type(self).__name__)
        cells = self.pad(x)
        bias = None if self.bias is None else self.bias.repeat_interleave(self.out_type.orientations)
        return self.unraster(F.conv2d(cells, self._kernel(), bias))


class ChartConv(_GaugeConvBase):
    """Scalars -> scalars with one ordinary kernel per face chart: x (B, C_in, N) -> (B, C_out, N),
    NESTED over `faces`. y[o](p) = Σ_i Σ_u ψ[o, i](u) x[i](p + u) + b[o], offsets u along the chart's
    axes, each face padded from its neighbours as `FacePadding` reads them (no orientation to shift).
    Not gauge equivariant: the kernel's axes turn with the charts (the trivial group's convolution, the
    control of `LiftingConv` / `GroupConv`). Parameters: C_out·C_in·k² (+ C_out)."""

    def __init__(self, in_chans: int, out_chans: int, nside: int, faces: Sequence[int], kernel_size: int = 3,
                 turns: Sequence[int] | None = None, bias: bool = True):
        super().__init__(trivial(in_chans), trivial(out_chans), nside, faces, kernel_size, turns, bias)
        self.weight = nn.Parameter(torch.empty(out_chans, in_chans, kernel_size, kernel_size))
        nn.init.normal_(self.weight, std=math.sqrt(2.0 / (in_chans * kernel_size ** 2)))

    def _kernel(self):
        return self.weight


class LiftingConv(_GaugeConvBase):
    """Scalars -> C4-regular fields: x (B, C_in, N) -> (B, C_out, 4, N), NESTED over `faces`.

    Orientation r of output field o is the correlation with kernel ψ[o] turned r quarter-turns:
    y[o, r](p) = Σ_i Σ_u ψ[o, i](R^−r u) x[i](p + u) + b[o]. Parameters: C_out·C_in·k² (+ C_out).
    """

    def __init__(self, in_chans: int, out_fields: int, nside: int, faces: Sequence[int], kernel_size: int = 3,
                 turns: Sequence[int] | None = None, bias: bool = True):
        super().__init__(trivial(in_chans), regular(out_fields), nside, faces, kernel_size, turns, bias)
        self.weight = nn.Parameter(torch.empty(out_fields, in_chans, kernel_size, kernel_size))
        nn.init.normal_(self.weight, std=math.sqrt(2.0 / (in_chans * kernel_size ** 2)))

    def _kernel(self):
        w = torch.stack([rotate_kernel(self.weight, r) for r in range(ORDER)], dim=1)  # (O, 4, I, k, k)
        return w.reshape(self.out_type.size, self.in_type.channels, self.kernel_size, self.kernel_size)


class GroupConv(_GaugeConvBase):
    """C4-regular -> C4-regular fields: x (B, C_in, 4, N) -> (B, C_out, 4, N), NESTED over `faces`.

    y[o, r](p) = Σ_{i, s} Σ_u ψ[o, i, s − r](R^−r u) x[i, s](p + u) + b[o] (orientation indices
    mod 4): each output orientation uses the kernel turned r quarter-turns with the input
    orientations shifted by r. Parameters: C_out·C_in·4·k² (+ C_out).
    """

    def __init__(self, in_fields: int, out_fields: int, nside: int, faces: Sequence[int], kernel_size: int = 3,
                 turns: Sequence[int] | None = None, bias: bool = True):
        super().__init__(regular(in_fields), regular(out_fields), nside, faces, kernel_size, turns, bias)
        self.weight = nn.Parameter(torch.empty(out_fields, in_fields, ORDER, kernel_size, kernel_size))
        nn.init.normal_(self.weight, std=math.sqrt(2.0 / (in_fields * ORDER * kernel_size ** 2)))

    def _kernel(self):
        w = torch.stack([rotate_kernel(_roll_orientations(self.weight, r, 2), r) for r in range(ORDER)], dim=1)
        return w.reshape(self.out_type.size, self.in_type.size, self.kernel_size, self.kernel_size)


# --------------------------------------------------------------------------- pointwise, pooling


class FieldNorm(nn.Module):
    """Group normalisation of regular fields with statistics and affine parameters shared over the
    4 orientations (and all pixels): x (B, C, 4, N) -> same; scalars (B, C, N) -> same (plain
    `GroupNorm`). `groups` divides C."""

    def __init__(self, fields: int, groups: int | None = None, eps: float = 1e-5):
        super().__init__()
        groups = math.gcd(fields, 8) if groups is None else int(groups)
        if fields % groups:
            raise ValueError(f"FieldNorm groups={groups} must divide fields={fields}")
        self.norm = nn.GroupNorm(groups, fields, eps=eps)

    def forward(self, x):
        return self.norm(x.flatten(2)).view_as(x)


class FieldPool(NestedPool):
    """Nested 2×2 pooling of fields: (B, C, [4,] N) -> (B, C, [4,] N/4), mean or max over the 4
    NESTED children (`NestedPool`). Gauge equivariant: a turned chart turns a 2×2 block into itself
    and leaves the orientation axis alone."""


class FieldUnpool(NestedUnpool):
    """Nested 2×2 unpooling of fields: (B, C, [4,] N) -> (B, C, [4,] 4N), each pixel copied to its
    4 NESTED children (`NestedUnpool`)."""


class OrientationPool(nn.Module):
    """Regular -> invariant scalars: (B, C, 4, N) -> (B, C, N), max or mean over the orientations."""

    def __init__(self, mode: str = "max"):
        super().__init__()
        if mode not in ("mean", "max"):
            raise ValueError(f"OrientationPool mode={mode!r} must be 'mean' or 'max'")
        self.mode = mode

    def extra_repr(self) -> str:
        return f"mode={self.mode}"

    def forward(self, x):
        return x.mean(2) if self.mode == "mean" else x.amax(2)
