"""Fisheye image <-> HEALPix sampling.

Two execution paths give the same numbers:
- CPU (numpy in, numpy out): OpenCV `remap` for bilinear images, `np.take` for nearest labels and
  depth. For data loading.
- torch (tensors in, tensors out, batched, any device, differentiable in the image, exportable to
  ONNX): gathers with precomputed indices and weights, held as buffers of `nn.Module`s.

Both sample at the same positions: the sampling maps are rounded to 1/32 pixel, which is the
resolution of OpenCV's fixed-point remap, so OpenCV interpolates exactly where torch does (a
shift of at most 1/64 pixel, far below the size of a sphere pixel).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import grid
from ._cache import cached, map_key
from ._frames import check_rotation, sphere_to_camera

__all__ = ["FisheyeToHealpix", "HealpixToFisheye", "HealpixSampler", "FisheyeSampler", "SUBPIXEL"]

SUBPIXEL = 32  # OpenCV's INTER_TAB_SIZE: fixed-point remap positions are multiples of 1/32 px
_CV_MAX = 32767  # OpenCV's remap indexes rows, columns and map coordinates with int16


def _camera_size(camera) -> tuple[int, int]:
    return int(camera.height), int(camera.width)


def _check_image(name: str, a, camera, channels_last: bool = True):
    """(H, W) or (H, W, C) matching the camera's image size."""
    h, w = _camera_size(camera)
    shape = tuple(a.shape)
    hw = shape[:2] if channels_last else shape[-2:]
    ok = len(shape) in (2, 3) if channels_last else len(shape) >= 2
    if not ok or hw != (h, w):
        layout = "(H, W) or (H, W, C)" if channels_last else "(..., H, W)"
        raise ValueError(f"{name} has shape {shape}; camera {camera.name or '?'} expects {layout} "
                         f"with H×W = {h}×{w}")


def _clamped_positions(uv: np.ndarray, valid: np.ndarray, h: int, w: int):
    """Sampling positions clamped into the image where valid (the same as replicating the border:
    both taps of a position in [−0.5, 0) hold the edge pixel). Invalid positions point at row h,
    the first of two zero rows that the CPU path appends below the image: they read 0 on
    OpenCV's fast path, with no mask to apply afterwards."""
    q = np.round(uv.astype(np.float64) * SUBPIXEL) / SUBPIXEL  # OpenCV's fixed-point grid
    u = np.where(valid, np.clip(q[:, 0], 0, w - 1), 0.0)
    v = np.where(valid, np.clip(q[:, 1], 0, h - 1), float(h))
    return u.astype(np.float32), v.astype(np.float32)


def _bilinear_tables(u: np.ndarray, v: np.ndarray, valid: np.ndarray, h: int, w: int):
    """Flat indices (4, N) into an H·W image and weights (4, N) for bilinear sampling at clamped
    positions (u, v); zero weights where not valid."""
    uu = np.where(valid, u, 0.0).astype(np.float64)
    vv = np.where(valid, v, 0.0).astype(np.float64)
    x0 = np.floor(uu)
    y0 = np.floor(vv)
    fx = uu - x0
    fy = vv - y0
    x0 = x0.astype(np.int64)
    y0 = y0.astype(np.int64)
    x1 = np.minimum(x0 + 1, w - 1)  # only reached with weight 0, at the last column or row
    y1 = np.minimum(y0 + 1, h - 1)
    idx = np.stack([y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1])
    wgt = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy])
    wgt = np.where(valid[None], wgt, 0.0).astype(np.float32)
    return idx, wgt


def _gather_rows(flat: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """flat (..., P), idx (M,) -> (M, ...): rows of a contiguous (P, ...) copy, which
    a CPU gathers five times faster than elements along the last dimension."""
    return flat.movedim(-1, 0).contiguous().index_select(0, idx)


def _gather_nearest(flat: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """flat (..., P), idx (M,) -> (..., M)."""
    return _gather_rows(flat, idx).movedim(0, -1)


def _gather_bilinear(flat: torch.Tensor, idx: torch.Tensor, wgt: torch.Tensor) -> torch.Tensor:
    """flat (..., P) values, idx (K, M) indices into P, wgt (K, M) -> (..., M): Σ_k wgt·flat[idx].
    One tap at a time, so the temporaries stay the size of the output."""
    rows = flat.movedim(-1, 0).contiguous()
    shape = (-1,) + (1,) * (rows.dim() - 1)
    out = None
    for k in range(idx.shape[0]):
        term = rows.index_select(0, idx[k]) * wgt[k].to(rows.dtype).reshape(shape)
        out = term if out is None else out + term
    return out.movedim(0, -1)


class HealpixSampler(nn.Module):
    """torch path of `FisheyeToHealpix`: fisheye images (B, C, H, W) -> sphere maps (B, C, N),
    N = len(base_pixels)·nside², NESTED. Bilinear for images, nearest for labels and depth.
    Tables are non-persistent buffers: they follow `.to(device)` and stay out of checkpoints."""

    def __init__(self, proj: "FisheyeToHealpix"):
        super().__init__()
        self.nside, self.base_pixels = proj.nside, proj.base_pixels
        self.height, self.width = _camera_size(proj.camera)
        self.ignore_index = proj.ignore_index
        idx, wgt = proj._bilinear()
        self.register_buffer("bilinear_index", torch.from_numpy(idx), persistent=False)
        self.register_buffer("bilinear_weight", torch.from_numpy(wgt), persistent=False)
        self.register_buffer("nearest_index", torch.from_numpy(proj._nearest), persistent=False)
        self.register_buffer("valid", torch.from_numpy(proj.valid_mask), persistent=False)

    def extra_repr(self) -> str:
        return (f"nside={self.nside}, base_pixels={list(self.base_pixels)}, "
                f"image={self.height}x{self.width}, N={self.valid.numel()}")

    def _flat(self, x: torch.Tensor, name: str) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (self.height, self.width):
            raise ValueError(f"{name} has shape {tuple(x.shape)}; expected (..., {self.height}, {self.width})")
        return x.flatten(-2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Bilinear: (..., C, H, W) -> (..., C, N) float; 0 where the sphere does not see the image."""
        flat = self._flat(images, "images")
        if not flat.is_floating_point():
            flat = flat.float()
        return _gather_bilinear(flat, self.bilinear_index, self.bilinear_weight)

    def labels(self, labels: torch.Tensor, fill: int | None = None) -> torch.Tensor:
        """Nearest: (..., H, W) integer -> (..., N) int64; `fill` (ignore_index) outside."""
        out = _gather_nearest(self._flat(labels, "labels"), self.nearest_index).long()
        fill = self.ignore_index if fill is None else fill
        return torch.where(self.valid, out, torch.full_like(out, fill))

    def depth(self, depth: torch.Tensor) -> torch.Tensor:
        """Nearest: (..., H, W) -> (..., N) float; NaN outside and where the input is not finite."""
        out = _gather_nearest(self._flat(depth, "depth"), self.nearest_index).float()
        ok = self.valid & torch.isfinite(out)
        return torch.where(ok, out, torch.full_like(out, float("nan")))


class _CameraOnSphere:
    """What both directions share: one camera, a set of base pixels, and how the sphere is turned."""

    def __init__(self, camera, nside, base_pixels, orientation, rotation, ignore_index):
        self.camera = camera
        self.nside = grid.check_nside(nside)
        self.base_pixels = grid.check_base_pixels(base_pixels)
        self.orientation = orientation
        self.rotation = check_rotation(rotation)
        self.ignore_index = int(ignore_index)
        self._to_camera = sphere_to_camera(camera, orientation, self.rotation)

    def _map_fields(self) -> dict:
        """The values a sampling map depends on: its cache key."""
        return dict(camera=self.camera.fingerprint(), nside=self.nside, faces=self.base_pixels,
                    to_camera=self._to_camera)

    @property
    def npix(self) -> int:
        return len(self.base_pixels) * self.nside**2


class FisheyeToHealpix(_CameraOnSphere):
    """Project fisheye images of one calibrated camera onto a set of HEALPix base pixels.

    proj = FisheyeToHealpix(cam, nside=256, base_pixels=range(8))
    proj.project_image(img_hwc)   -> float32 (C, N), bilinear, 0 outside the image
    proj.project_labels(lbl_hw)   -> int64 (N,), nearest, ignore_index outside
    proj.project_depth(depth_hw)  -> float32 (N,), nearest, NaN outside
    proj.valid_mask               -> bool (N,): the sphere pixel's centre ray hits the image
    proj.module()                 -> HealpixSampler, the same sampling in torch

    N = len(base_pixels)·nside², NESTED order. Pixel centres are at integer image coordinates; a
    sphere pixel is valid when its centre lands in [−0.5, W−0.5) × [−0.5, H−0.5). Maps are cached
    per (calibration values, nside, faces, orientation, rotation) in memory and on disk
    (`cache_dir`: None = the default folder, False = memory only; `cache=False`: no caching).
    """

    def __init__(self, camera, nside: int, base_pixels=range(8), orientation: str = "camera",
                 rotation=None, ignore_index: int = 255, cache_dir=None, cache: bool = True):
        super().__init__(camera, nside, base_pixels, orientation, rotation, ignore_index)
        key = map_key("fisheye2healpix", **self._map_fields())
        # cache=False: a one-off map (e.g. a random augmentation rotation) that would only evict
        # useful entries from the caches.
        expected = {"uv": ((self.npix, 2), np.float32)}
        self._uv = (cached(key, self._build_map, cache_dir, expected) if cache else self._build_map())["uv"]
        h, w = _camera_size(camera)
        u, v = self._uv[:, 0], self._uv[:, 1]
        with np.errstate(invalid="ignore"):
            self.valid_mask = (u >= -0.5) & (u < w - 0.5) & (v >= -0.5) & (v < h - 0.5)
        # Nearest pixel: round half up, the same rule as floor(x + 0.5).
        self._u, self._v = _clamped_positions(self._uv, self.valid_mask, h, w)
        xn = np.floor(np.where(self.valid_mask, u, 0) + 0.5).astype(np.int64)
        yn = np.floor(np.where(self.valid_mask, v, 0) + 0.5).astype(np.int64)
        self._nearest = np.clip(yn, 0, h - 1) * w + np.clip(xn, 0, w - 1)
        self._cv_maps = None
        self._tables = None

    def __repr__(self) -> str:
        return (f"FisheyeToHealpix(camera={self.camera.name or '?'}, nside={self.nside}, "
                f"base_pixels={list(self.base_pixels)}, orientation={self.orientation!r}, "
                f"valid={self.valid_mask.mean():.1%})")

    @property
    def sample_positions(self) -> np.ndarray:
        """(N, 2) float32 image coordinates (u, v) of each sphere pixel's centre; NaN outside the
        camera's field of view. Exact: the nearest-pixel lookups use them as they are; bilinear
        sampling rounds them to 1/32 px."""
        return self._uv

    def _build_map(self) -> dict[str, np.ndarray]:
        ipix = grid.base_pixel_indices(self.nside, self.base_pixels)
        dirs = np.stack(grid.pix2vec(self.nside, ipix), axis=-1)  # (N, 3), sphere frame
        rays = dirs @ self._to_camera.T
        uv = np.asarray(self.camera.ray_to_pixel(rays), dtype=np.float64)
        # Far outside positions would only overflow the fixed-point maps; they are invalid anyway.
        uv = np.where(np.abs(uv) < 1e6, uv, np.nan)
        return {"uv": uv.astype(np.float32)}

    def _bilinear(self):
        if self._tables is None:
            h, w = _camera_size(self.camera)
            self._tables = _bilinear_tables(self._u, self._v, self.valid_mask, h, w)
        return self._tables

    def _opencv_maps(self):
        """Fixed-point OpenCV maps shaped (N / cols, cols): remap's destination width is limited."""
        if self._cv_maps is None:
            import cv2

            cols = self.nside
            while cols > 4096:
                cols //= 2
            self._cv_maps = cv2.convertMaps(self._u.reshape(-1, cols), self._v.reshape(-1, cols),
                                            cv2.CV_16SC2)
        return self._cv_maps

    # ----------------------------------------------------------------- CPU path (numpy)

    def project_image(self, image: np.ndarray) -> np.ndarray:
        """image (H, W) or (H, W, C), any real dtype (uint8 on disk) -> float32 (C, N), bilinear."""
        image = np.asarray(image)
        _check_image("image", image, self.camera)
        h, w = image.shape[:2]
        c = 1 if image.ndim == 2 else image.shape[2]
        if max(h, w) + 2 < _CV_MAX and c <= 4:
            import cv2

            m1, m2 = self._opencv_maps()
            # The float conversion copies the image anyway; copy it above two zero rows.
            buf = np.empty((h + 2, w, c), dtype=np.float32)
            buf[h:] = 0
            buf[:h] = image.reshape(h, w, c)
            out = cv2.remap(buf, m1, m2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            result = np.empty((c, self.npix), dtype=np.float32)
            if c == 1:
                result[0] = out.reshape(-1)
            else:  # channels-last -> channels-first, written straight into the result's rows
                cv2.split(out, [row.reshape(m1.shape[:2]) for row in result])
            return result
        # Beyond OpenCV's limits: the same interpolation, gathered in numpy.
        idx, wgt = self._bilinear()
        flat = image.reshape(h * w, c).astype(np.float32)
        return sum(flat[idx[k]].T * wgt[k] for k in range(4)).astype(np.float32)

    def project_labels(self, labels: np.ndarray, fill: int | None = None) -> np.ndarray:
        """labels (H, W) integer class ids -> int64 (N,), nearest; `fill` (default ignore_index)
        where the sphere pixel does not see the image (use fill=0 for the original's void)."""
        labels = np.asarray(labels)
        _check_image("labels", labels, self.camera)
        if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be an integer (H, W) map, got {labels.dtype} {labels.shape}")
        out = np.take(labels.reshape(-1), self._nearest).astype(np.int64)
        out[~self.valid_mask] = self.ignore_index if fill is None else fill
        return out

    def project_depth(self, depth: np.ndarray) -> np.ndarray:
        """depth (H, W) metres along the ray -> float32 (N,), nearest; NaN outside the image and
        where the depth is not finite."""
        depth = np.asarray(depth)
        _check_image("depth", depth, self.camera)
        if depth.ndim != 2:
            raise ValueError(f"depth must be an (H, W) map, got shape {depth.shape}")
        out = np.take(depth.reshape(-1), self._nearest).astype(np.float32)
        out[~(self.valid_mask & np.isfinite(out))] = np.nan
        return out

    # ----------------------------------------------------------------- torch path

    def module(self) -> HealpixSampler:
        """The same projection as an `nn.Module` (batched, any device, differentiable, ONNX)."""
        return HealpixSampler(self)


class FisheyeSampler(nn.Module):
    """torch path of `HealpixToFisheye`: sphere maps (..., N) -> fisheye images (..., H, W)."""

    def __init__(self, back: "HealpixToFisheye", interpolation: str | None = None):
        super().__init__()
        self.interpolation = back._check_mode(interpolation)
        self.height, self.width = _camera_size(back.camera)
        self.nside, self.base_pixels = back.nside, back.base_pixels
        if self.interpolation == "nearest":
            idx = back._nearest
            self.register_buffer("index", torch.from_numpy(np.maximum(idx, 0)), persistent=False)
            self.register_buffer("covered", torch.from_numpy(idx >= 0), persistent=False)
        else:
            idx, wgt = back._bilinear()
            self.register_buffer("index", torch.from_numpy(np.maximum(idx, 0)), persistent=False)
            self.register_buffer("weight", torch.from_numpy(wgt), persistent=False)
            self.register_buffer("covered", torch.from_numpy(wgt.sum(0) > 0), persistent=False)

    def extra_repr(self) -> str:
        return (f"nside={self.nside}, base_pixels={list(self.base_pixels)}, "
                f"image={self.height}x{self.width}, interpolation={self.interpolation}")

    def forward(self, values: torch.Tensor, fill: float | int | None = None) -> torch.Tensor:
        """values (..., N) -> (..., H, W); `fill` (NaN for floats, 255 for integers) where the image
        pixel's ray falls outside the chosen faces."""
        if self.interpolation == "nearest":
            out = _gather_nearest(values, self.index)
        else:
            out = _gather_bilinear(values.float(), self.index, self.weight)
        if fill is None:
            fill = float("nan") if out.is_floating_point() else 255
        out = torch.where(self.covered, out, torch.full_like(out, fill))
        return out.unflatten(-1, (self.height, self.width))


class HealpixToFisheye(_CameraOnSphere):
    """Back-project maps on a set of HEALPix base pixels into the fisheye image of one camera.

    back = HealpixToFisheye(cam, nside=256, base_pixels=range(8))
    back.backproject(values)     # (..., N) -> (..., H, W)
    back.covered_mask            # (H, W) bool: the image pixel's ray falls inside the faces

    `nearest` (default): every image pixel takes the HEALPix pixel that contains its ray (for labels,
    predictions, depth). `bilinear`: interpolation between the 4 nearest pixel centres on the sphere
    (healpy's scheme; for images); neighbours outside the faces are left out and the weights
    renormalised. numpy in, numpy out; torch in, torch out (same device).
    """

    MODES = ("nearest", "bilinear")

    def __init__(self, camera, nside: int, base_pixels=range(8), orientation: str = "camera",
                 rotation=None, interpolation: str = "nearest", ignore_index: int = 255, cache_dir=None):
        super().__init__(camera, nside, base_pixels, orientation, rotation, ignore_index)
        self.interpolation = self._check_mode(interpolation, default="nearest")
        self._cache_dir = cache_dir
        h, w = _camera_size(camera)
        arrays = cached(map_key("healpix2fisheye", **self._map_fields()), self._build_nearest, cache_dir,
                        {"index": ((h * w,), np.int32)})
        self._nearest = arrays["index"].astype(np.int64)
        self._tables = None
        self._modules: dict[str, FisheyeSampler] = {}

    def __repr__(self) -> str:
        return (f"HealpixToFisheye(camera={self.camera.name or '?'}, nside={self.nside}, "
                f"base_pixels={list(self.base_pixels)}, orientation={self.orientation!r}, "
                f"interpolation={self.interpolation!r}, covered={self.covered_mask.mean():.1%})")

    def _check_mode(self, mode, default=None):
        mode = mode or default or self.interpolation
        if mode not in self.MODES:
            raise ValueError(f"interpolation={mode!r} must be one of {self.MODES}")
        return mode

    @property
    def covered_mask(self) -> np.ndarray:
        h, w = _camera_size(self.camera)
        return (self._nearest >= 0).reshape(h, w)

    def _sphere_dirs(self):
        """Unit directions (H·W, 3) in the sphere frame of every image pixel; NaN where the camera
        model has no ray (beyond its field of view)."""
        h, w = _camera_size(self.camera)
        vv, uu = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
        rays = np.asarray(self.camera.pixel_to_ray(np.stack([uu, vv], axis=-1).reshape(-1, 2)))
        return rays @ self._to_camera  # r_cam = M·v  =>  v = Mᵀ·r_cam

    def _build_nearest(self) -> dict[str, np.ndarray]:
        dirs = self._sphere_dirs()
        ok = np.all(np.isfinite(dirs), axis=1)
        index = np.full(len(dirs), -1, dtype=np.int64)
        gpix = grid.vec2pix(self.nside, *dirs[ok].T)
        index[ok] = grid.global_to_local(self.nside, self.base_pixels, gpix)
        return {"index": index.astype(np.int32)}

    def _build_bilinear(self) -> dict[str, np.ndarray]:
        dirs = self._sphere_dirs()
        ok = np.all(np.isfinite(dirs), axis=1)
        idx = np.full((4, len(dirs)), -1, dtype=np.int64)
        wgt = np.zeros((4, len(dirs)), dtype=np.float64)
        theta, phi = grid.vec2ang(*dirs[ok].T)
        gpix, w = grid.get_interp_weights(self.nside, theta, phi)
        local = grid.global_to_local(self.nside, self.base_pixels, gpix)
        w = np.where(local >= 0, w, 0.0)
        total = w.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            w = np.where(total > 0, w / total, 0.0)
        idx[:, ok] = local
        wgt[:, ok] = w
        return {"index": idx.astype(np.int32), "weight": wgt.astype(np.float32)}

    def _bilinear(self):
        if self._tables is None:
            h, w = _camera_size(self.camera)
            arrays = cached(map_key("healpix2fisheye-bilinear", **self._map_fields()), self._build_bilinear,
                            self._cache_dir, {"index": ((4, h * w), np.int32), "weight": ((4, h * w), np.float32)})
            self._tables = arrays["index"].astype(np.int64), arrays["weight"]
        return self._tables

    def module(self, interpolation: str | None = None) -> FisheyeSampler:
        """The back-projection as an `nn.Module` (batched, any device, ONNX-exportable)."""
        return FisheyeSampler(self, interpolation)

    def backproject(self, values, interpolation: str | None = None, fill=None):
        """values (..., N) -> (..., H, W). Integer values are always taken nearest. `fill` for image
        pixels outside the faces: NaN for floats, ignore_index for integers, unless given."""
        n = self.npix
        if values.shape[-1] != n:
            raise ValueError(f"values has shape {tuple(values.shape)}; expected (..., {n}) for "
                             f"nside={self.nside}, base_pixels={list(self.base_pixels)}")
        mode = self._check_mode(interpolation)
        if isinstance(values, torch.Tensor):
            is_float = values.is_floating_point()
            mode = mode if is_float else "nearest"
            key = f"{mode}:{values.device}"
            if key not in self._modules:
                self._modules[key] = self.module(mode).to(values.device)
            fill = (float("nan") if is_float else self.ignore_index) if fill is None else fill
            return self._modules[key](values, fill)
        values = np.asarray(values)
        is_float = np.issubdtype(values.dtype, np.floating)
        if fill is None:
            fill = np.nan if is_float else self.ignore_index
        h, w = _camera_size(self.camera)
        if mode == "nearest" or not is_float:
            out = np.take(values, np.maximum(self._nearest, 0), axis=-1)
            covered = self._nearest >= 0
        else:
            idx, wgt = self._bilinear()
            out = sum(np.take(values, np.maximum(idx[k], 0), axis=-1) * wgt[k] for k in range(4))
            out = out.astype(values.dtype)
            covered = wgt.sum(0) > 0
        out = np.where(covered, out, np.asarray(fill).astype(out.dtype))
        return out.reshape(values.shape[:-1] + (h, w))
