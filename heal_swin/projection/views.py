"""Rasterised views of HEALPix maps for the figures (preview, evaluation, inference): no plotting here.

A view is a raster of directions on the sphere: `MollweideView` (the whole sphere, equal-area) and
`OrthographicView` (the hemisphere around an axis, as seen from the sphere's centre). `lookup`
turns a view into indices of a map over a set of base pixels; the overlay helpers turn integer
id rasters into RGBA boundary layers to draw over an image; `depth_rgb` is the depth colour map
that every figure uses.
"""

from __future__ import annotations

import numpy as np

from .. import grid

__all__ = ["MollweideView", "OrthographicView", "lookup", "paint", "boundaries", "face_overlay",
           "line_overlay", "face_centres", "face_label_positions", "depth_rgb", "DEPTH_COLORMAP", "DEPTH_INVALID", "FACE_COLORS",
           "OUTSIDE_VIEW", "UNUSED_FACE"]

DEPTH_COLORMAP = "magma_r"  # near = bright, far = dark
DEPTH_INVALID = 0.85        # grey level of pixels without a depth
# The 12 base pixels' colours in every figure: saturated, apart from the greys of unseen / unused pixels.
FACE_COLORS = np.array([[int(h[i:i + 2], 16) / 255 for i in (0, 2, 4)] for h in (
    "e6194b", "3cb44b", "ffe119", "4363d8", "f58231", "911eb4",
    "42d4f4", "f032e6", "bfef45", "469990", "9a6324", "fabed4")], dtype=np.float32)

OUTSIDE_VIEW = -2  # lookup(): the raster point is not on the sphere (outside the ellipse / disc)
UNUSED_FACE = -1   # lookup(): the direction lies on a face that the map does not hold

_SQRT2 = np.sqrt(2.0)


class MollweideView:
    """Mollweide raster of the whole sphere: θ = 0 at the top, φ = 0 in the centre and φ growing to
    the left (healpy's `mollview` convention: the sphere seen from inside).

    Attributes: theta, phi (H, W) float64 (NaN outside the ellipse), inside (H, W) bool.
    The plane is x ∈ [−2√2, 2√2] (right positive), y ∈ [−√2, √2] (up positive).
    """

    def __init__(self, width: int = 720):
        self.width, self.height = int(width), int(width) // 2
        cols = (np.arange(self.width) + 0.5) / self.width
        rows = (np.arange(self.height) + 0.5) / self.height
        x = (cols * 4 - 2) * _SQRT2
        y = (1 - rows * 2) * _SQRT2
        xx, yy = np.meshgrid(x, y)
        self.inside = xx**2 / 8 + yy**2 / 2 <= 1
        aux = np.arcsin(np.clip(yy / _SQRT2, -1, 1))
        lat = np.arcsin(np.clip((2 * aux + np.sin(2 * aux)) / np.pi, -1, 1))
        with np.errstate(divide="ignore", invalid="ignore"):
            lon = -np.pi * xx / (2 * _SQRT2 * np.cos(aux))
        self.theta = np.where(self.inside, np.pi / 2 - lat, np.nan)
        self.phi = np.where(self.inside, np.mod(lon, 2 * np.pi), np.nan)

    def to_raster(self, theta, phi):
        """(θ, φ) -> fractional raster (column, row); the forward Mollweide by Newton iteration."""
        lat = np.pi / 2 - np.asarray(theta, dtype=np.float64)
        lon = np.angle(np.exp(1j * np.asarray(phi, dtype=np.float64)))  # wrap to (−π, π]
        aux = lat.copy()
        for _ in range(30):
            f = 2 * aux + np.sin(2 * aux) - np.pi * np.sin(lat)
            slope = 2 + 2 * np.cos(2 * aux)
            aux = np.where(slope > 1e-12, aux - f / np.where(slope > 1e-12, slope, 1.0), aux)
        x = -2 * _SQRT2 / np.pi * lon * np.cos(aux)
        y = _SQRT2 * np.sin(aux)
        col = (x / _SQRT2 + 2) / 4 * self.width - 0.5
        row = (1 - y / _SQRT2) / 2 * self.height - 0.5
        return col, row

    def lonlat_ticks(self):
        """Raster positions of φ = 180, 90, 0, −90, −180° on the equator and θ = 0, 45, …, 180° at
        φ = 0: ((columns, φ values), (rows, θ values))."""
        phis = np.array([180.0, 90.0, 0.0, -90.0, -180.0])
        cols = (2 - phis / 90) / 4 * self.width - 0.5  # on the equator x/√2 = −2φ/π
        thetas = np.array([0.0, 45.0, 90.0, 135.0, 180.0])
        _, rows = self.to_raster(np.radians(thetas), np.zeros_like(thetas))
        return (cols, phis), (rows, thetas)


class OrthographicView:
    """Orthographic raster of the hemisphere around a camera's optical axis, seen from the centre
    of the sphere: raster right = the camera's +x (image right), raster down = +y (image down), so
    the view looks like the fisheye image cut at 90° incidence.

    `to_camera` is the matrix M with r_camera = M · v for sphere directions v (see
    `projection.sphere_to_camera`). Attributes: dirs (H, W, 3) sphere-frame unit vectors (NaN
    outside the disc), theta, phi, inside.
    """

    def __init__(self, to_camera, size: int = 480):
        self.width = self.height = int(size)
        self.to_camera = np.asarray(to_camera, dtype=np.float64)
        c = (np.arange(size) + 0.5) / size * 2 - 1
        a, b = np.meshgrid(c, c)
        self.inside = a**2 + b**2 <= 1
        z = np.sqrt(np.clip(1 - a**2 - b**2, 0, None))
        rays = np.stack([a, b, z], axis=-1)
        dirs = rays @ self.to_camera  # v = Mᵀ · r_camera
        self.dirs = np.where(self.inside[..., None], dirs, np.nan)
        theta, phi = grid.vec2ang(*np.nan_to_num(dirs).reshape(-1, 3).T)
        self.theta = np.where(self.inside, theta.reshape(a.shape), np.nan)
        self.phi = np.where(self.inside, phi.reshape(a.shape), np.nan)

    def to_raster(self, dirs):
        """Sphere directions (..., 3) -> (column, row, in_front): in_front is False behind the view."""
        rays = np.asarray(dirs, dtype=np.float64) @ self.to_camera.T
        col = (rays[..., 0] + 1) / 2 * self.width - 0.5
        row = (rays[..., 1] + 1) / 2 * self.height - 0.5
        return col, row, rays[..., 2] > 0


def lookup(view, nside: int, base_pixels=None, *, faces=None) -> tuple[np.ndarray, np.ndarray]:
    """(local, face): per raster point, the index into a map over `base_pixels` (UNUSED_FACE when the
    direction lies on another face, OUTSIDE_VIEW off the sphere) and the base pixel 0–11 of the
    direction (−1 off the sphere)."""
    base_pixels = grid.base_pixels_keyword(base_pixels, faces, "views.lookup")
    local = np.full(view.inside.shape, OUTSIDE_VIEW, dtype=np.int64)
    face = np.full(view.inside.shape, -1, dtype=np.int64)
    gpix = grid.ang2pix(nside, view.theta[view.inside], view.phi[view.inside])
    local[view.inside] = grid.global_to_local(nside, base_pixels, gpix)
    face[view.inside] = gpix // (nside * nside)
    return local, face


def paint(local: np.ndarray, colors: np.ndarray, seen: np.ndarray, unseen_color, unused_color) -> np.ndarray:
    """RGBA float (H, W, 4) of a map on a view: `colors` (N, 3) in [0, 1] where `seen` (N,) holds,
    `unseen_color` on the map's other pixels, `unused_color` on faces outside the map, transparent
    off the sphere."""
    out = np.zeros(local.shape + (4,), dtype=np.float32)
    on_map = local >= 0
    idx = local[on_map]
    rgb = np.where(seen[idx][:, None], colors[idx], np.asarray(unseen_color, dtype=np.float32))
    out[on_map, :3] = rgb
    out[local == UNUSED_FACE, :3] = unused_color
    out[local != OUTSIDE_VIEW, 3] = 1.0
    return out


def boundaries(ids: np.ndarray) -> np.ndarray:
    """bool (H, W): pixels with a 4-neighbour of another id; negative ids (off the sphere, beyond
    the camera's field of view) draw no boundary."""
    ids = np.asarray(ids)
    edge = np.zeros(ids.shape, dtype=bool)
    ok = ids >= 0
    dx = (ids[:, 1:] != ids[:, :-1]) & ok[:, 1:] & ok[:, :-1]
    dy = (ids[1:, :] != ids[:-1, :]) & ok[1:, :] & ok[:-1, :]
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    edge[1:, :] |= dy
    edge[:-1, :] |= dy
    return edge


def _thicken(mask: np.ndarray, width: int) -> np.ndarray:
    if width <= 1:
        return mask
    import cv2

    kernel = np.ones((width, width), dtype=np.uint8)
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def face_overlay(face: np.ndarray, face_colors: np.ndarray, width: int = 3) -> np.ndarray:
    """RGBA (H, W, 4): face boundaries `width` pixels thick, each side in its own face's colour."""
    line = _thicken(boundaries(face), width) & (face >= 0)
    out = np.zeros(face.shape + (4,), dtype=np.float32)
    out[line, :3] = np.asarray(face_colors, dtype=np.float32)[face[line], :3]
    out[line, 3] = 1.0
    return out


def line_overlay(ids: np.ndarray, color=(1.0, 1.0, 1.0), alpha: float = 0.55, width: int = 1) -> np.ndarray:
    """RGBA (H, W, 4): thin lines where `ids` changes (a pixel grid)."""
    line = _thicken(boundaries(ids), width)
    out = np.zeros(ids.shape + (4,), dtype=np.float32)
    out[line, :3] = color
    out[line, 3] = alpha
    return out


def face_centres() -> np.ndarray:
    """(12, 3) unit vectors of the 12 base pixels' centres (sphere frame)."""
    return np.stack(grid.pix2vec(1, np.arange(12)), axis=-1)


def face_label_positions(view: MollweideView, margin: float = 0.04) -> np.ndarray:
    """(12, 2) raster (column, row) where to write each base pixel's number on a Mollweide view:
    its centre, kept `margin`·width inside the ellipse's left and right ends (faces 4 and 6 of
    the camera frame are centred on the φ = ±180° seam)."""
    theta, phi = grid.vec2ang(*face_centres().T)
    cols, rows = view.to_raster(theta, phi)
    return np.stack([np.clip(cols, margin * view.width, (1 - margin) * view.width), rows], axis=-1)


def depth_rgb(depth: np.ndarray, vmax: float) -> np.ndarray:
    """Depth (metres, any shape) -> uint8 RGB (..., 3) in `DEPTH_COLORMAP` over [0, vmax]; invalid
    (non-finite) depths are light grey."""
    import matplotlib

    d = np.asarray(depth, dtype=np.float64)
    x = np.clip(np.nan_to_num(d, nan=0.0) / max(vmax, 1e-6), 0, 1).reshape(-1)  # 1-D: a scalar works too
    rgb = matplotlib.colormaps[DEPTH_COLORMAP](x)[:, :3].reshape(d.shape + (3,))
    rgb[~np.isfinite(d)] = DEPTH_INVALID
    return (rgb * 255).astype(np.uint8)
