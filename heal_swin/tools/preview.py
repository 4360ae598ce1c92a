"""Projection preview: what the HEALPix sphere sees of a fisheye camera, in one figure.

One camera (`--image`, `--calibration`, optional `--labels`):
  1. the fisheye image with the HEALPix base pixels (faces; thick, coloured, numbered) and a coarse
     HEALPix pixel grid drawn on it;
  2. the projected sphere in Mollweide (faces not projected dark, pixels not seen grey);
  3. an orthographic view of the projected sphere along the optical axis (like the fisheye);
  4. the labels on the sphere in class colours (with `--labels`);
  5. the sphere back-projected into the fisheye and its absolute difference from the input.
It prints the coverage: sphere pixels that see the image, image pixels inside the faces, incidence
angles and angular pixel sizes (sphere vs image), with the nside that matches the image centre.

A WoodScape rig (`--rig FRAME_ID --root DIR`): the four cameras on one sphere in the vehicle frame,
each sphere pixel taken from the camera that sees it closest to its optical axis.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import grid
from ..cameras import CalibrationError, load_calibration
from ..data.classes import WOODSCAPE_CLASSES, WOODSCAPE_COLORS, colorize
from ..projection import ORIENTATIONS, FisheyeToHealpix, HealpixToFisheye, RigToHealpix, sphere_to_camera, views

__all__ = ["coverage_report", "format_coverage", "render_preview", "fuse_rig",
           "RigFusion", "render_rig", "format_rig", "main"]

PROG = "heal-swin-preview"
EXAMPLES = """\
examples:
  # one camera, sphere in the camera frame (optical axis = north pole), faces 0-7 as in the paper
  heal-swin-preview --image rgb_images/00000_FV.png --calibration calibration/00000_FV.json \\
      --labels semantic_annotations/gtLabels/00000_FV.png --nside 256 --base-pixels 0-7 --out fv.png

  # the same camera placed on the vehicle's sphere, all 12 faces
  heal-swin-preview --image 00000_FV.png --calibration 00000_FV.json --orientation vehicle \\
      --base-pixels all --out fv_vehicle.png

  # the four cameras of WoodScape frame 00000 on one sphere (vehicle frame)
  heal-swin-preview --rig 00000 --root data/woodscape --nside 128 --out rig.png
"""

DPI = 110
FIGSIZE = (16, 9)
RIG_FIGSIZE = (16, 8)  # two rows of width-limited panels: a taller figure only adds white space
FACE_COLORS = views.FACE_COLORS  # one face palette for the preview, the evaluation and inference figures
CAMERA_COLORS = np.array([[0.12, 0.47, 0.71], [1.0, 0.50, 0.05], [0.17, 0.63, 0.17],
                          [0.84, 0.15, 0.16], [0.58, 0.40, 0.74], [0.09, 0.75, 0.81]], dtype=np.float32)
SWATCH_EDGE = (0.25, 0.25, 0.25)  # legend swatches are outlined: a light class colour stays visible
UNSEEN = (0.6, 0.6, 0.6)     # sphere pixel of a projected face that does not see the image
UNUSED = (0.22, 0.22, 0.22)  # sphere pixel of a face that is not projected
MOLLWEIDE_WIDTH = 720
ORTHO_SIZE = 480


# --------------------------------------------------------------------------------------------------
# coverage figures
# --------------------------------------------------------------------------------------------------


def _angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle (radians) between vectors along the last axis; accurate for tiny angles too."""
    return np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1), np.sum(a * b, axis=-1))


def _pixel_rays(camera) -> np.ndarray:
    """(H, W, 3) camera-frame unit rays of every pixel centre; NaN beyond the field of view."""
    vv, uu = np.meshgrid(np.arange(camera.height, dtype=np.float64),
                         np.arange(camera.width, dtype=np.float64), indexing="ij")
    return np.asarray(camera.pixel_to_ray(np.stack([uu, vv], axis=-1)))


def _pixel_sizes(camera, incidence: np.ndarray) -> tuple[float, float, float]:
    """Angular size of one image pixel (radians): at the principal point, and radially and
    tangentially at the pixel with the largest incidence angle."""
    centre = np.asarray(camera.ray_to_pixel(np.array([0.0, 0.0, 1.0])))
    at_centre = float(_angle(*camera.pixel_to_ray(np.stack([centre, centre + [1.0, 0.0]]))))
    row, col = np.unravel_index(np.nanargmax(incidence), incidence.shape)
    p = np.array([col, row], dtype=np.float64)
    radial = (p - centre) / max(np.linalg.norm(p - centre), 1e-9)
    tangential = np.array([-radial[1], radial[0]])
    rays = camera.pixel_to_ray(np.stack([p, p - radial, p + tangential]))
    return at_centre, float(_angle(rays[0], rays[1])), float(_angle(rays[0], rays[2]))


def coverage_report(camera, nside: int = 256, base_pixels=None, orientation: str = "camera", *, faces=None) -> dict:
    """How the sphere over `base_pixels` (default faces 0-7) and the camera's image cover each other.

    Returns a dict: sphere_seen (fraction of the faces' sphere pixels whose centre sees the image),
    image_covered (fraction of image pixels whose ray falls inside the faces), max_incidence_deg
    (all image pixels) and max_incidence_covered_deg (those inside the faces), sphere_pixel_deg
    (`grid.nside2resol`), image_pixel_centre_deg (one pixel at the principal point),
    image_pixel_edge_radial_deg / image_pixel_edge_tangential_deg (at the largest incidence),
    matching_nside (the nside whose pixel size equals the image centre's) and suggested_nside (the
    nearest power of two), plus camera, nside, faces and orientation.
    """
    faces = grid.base_pixels_keyword(base_pixels, faces, "coverage_report")
    faces = range(8) if faces is None else faces
    nside = grid.check_nside(nside)
    proj = FisheyeToHealpix(camera, nside, faces, orientation)
    back = HealpixToFisheye(camera, nside, faces, orientation)
    rays = _pixel_rays(camera)
    incidence = np.degrees(np.arccos(np.clip(rays[..., 2], -1.0, 1.0)))
    covered = back.covered_mask & np.isfinite(incidence)
    centre, edge_radial, edge_tangential = _pixel_sizes(camera, incidence)
    matching = math.sqrt(math.pi / 3) / centre  # nside2resol(n) = √(π/3) / n
    return {
        "camera": camera.name,
        "nside": nside,
        "faces": faces,
        "orientation": orientation,
        "sphere_seen": float(proj.valid_mask.mean()),
        "image_covered": float(back.covered_mask.mean()),
        "max_incidence_deg": float(np.nanmax(incidence)),
        "max_incidence_covered_deg": float(incidence[covered].max()) if covered.any() else float("nan"),
        "sphere_pixel_deg": math.degrees(grid.nside2resol(nside)),
        "image_pixel_centre_deg": math.degrees(centre),
        "image_pixel_edge_radial_deg": math.degrees(edge_radial),
        "image_pixel_edge_tangential_deg": math.degrees(edge_tangential),
        "matching_nside": matching,
        "suggested_nside": 2 ** max(0, round(math.log2(matching))),
    }


def _deg_arcmin(deg: float) -> str:
    return f"{deg:.3f}° ({deg * 60:.1f}′)"


def format_coverage(report: dict) -> str:
    """The coverage report as a few readable lines."""
    faces = grid.format_base_pixels(report["faces"])
    return "\n".join([
        f"camera {report['camera'] or '?'}, nside {report['nside']}, faces {faces}, "
        f"{report['orientation']} orientation",
        f"  {'sphere pixels of faces ' + faces + ' that see the image:':<48}{report['sphere_seen']:6.1%}",
        f"  {'image pixels inside faces ' + faces + ':':<48}{report['image_covered']:6.1%}",
        f"  largest incidence angle: {report['max_incidence_deg']:.1f}° in the image, "
        f"{report['max_incidence_covered_deg']:.1f}° inside the faces",
        f"  pixel size: sphere {_deg_arcmin(report['sphere_pixel_deg'])}; image centre "
        f"{_deg_arcmin(report['image_pixel_centre_deg'])}; at {report['max_incidence_deg']:.0f}° "
        f"radial {_deg_arcmin(report['image_pixel_edge_radial_deg'])}, tangential "
        f"{_deg_arcmin(report['image_pixel_edge_tangential_deg'])}",
        f"  nside ≈ {report['matching_nside']:.0f} matches the image centre's resolution "
        f"(nearest power of two: {report['suggested_nside']})",
    ])


# --------------------------------------------------------------------------------------------------
# panels
# --------------------------------------------------------------------------------------------------


def _as_rgb(image: np.ndarray, camera, name: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != (camera.height, camera.width):
        raise ValueError(f"{name} has shape {image.shape}; camera {camera.name or '?'} expects "
                         f"({camera.height}, {camera.width}, 3)")
    return image


def _face_label(ax, x, y, face: int, chosen: bool, size: float = 11):
    from matplotlib import patheffects

    color = FACE_COLORS[face] if chosen else (0.85, 0.85, 0.85)
    ax.text(x, y, str(face), color=color, fontsize=size, fontweight="bold" if chosen else "normal",
            ha="center", va="center", clip_on=True,
            path_effects=[patheffects.withStroke(linewidth=2.5, foreground="black")])


def _line_width(pixels: int, per: int) -> int:
    """Overlay line width in raster pixels, so lines stay visible after resampling to the panel."""
    return max(1, round(pixels / per))


def _panel_fisheye(ax, camera, image, faces, orientation, grid_nside, title, show_grid=True):
    """The fisheye image with the faces (thick, numbered) and a coarse HEALPix grid (thin)."""
    back = HealpixToFisheye(camera, grid_nside, range(12), orientation)
    ids = back.backproject(np.arange(12 * grid_nside**2), fill=-1)
    face = np.where(ids >= 0, ids // grid_nside**2, -1)
    ax.imshow(image)
    dim = np.zeros(face.shape + (4,), dtype=np.float32)
    dim[~np.isin(face, faces), 3] = 0.45  # darken what the projection leaves out
    ax.imshow(dim)
    if show_grid:
        ax.imshow(views.line_overlay(ids, width=_line_width(camera.width, 500)))
    ax.imshow(views.face_overlay(face, FACE_COLORS, width=_line_width(camera.width, 200)))
    centres = views.face_centres() @ sphere_to_camera(camera, orientation).T
    uv = np.asarray(camera.ray_to_pixel(centres))
    for f in range(12):
        u, v = uv[f]
        if not (np.isfinite(u) and 0 <= u < camera.width and 0 <= v < camera.height):
            if (face == f).mean() < 0.002:
                continue
            v, u = np.argwhere(face == f).mean(axis=0)  # face centre not in the image: its visible part
        _face_label(ax, u, v, f, f in faces)
    ax.set_title(title, fontsize=10)
    ax.set_axis_off()


def _mollweide_axes(ax, view, orientation):
    from matplotlib.patches import Ellipse

    ax.add_patch(Ellipse((view.width / 2 - 0.5, view.height / 2 - 0.5), view.width, view.height,
                         fill=False, lw=0.8, ec="black"))
    (cols, phis), (rows, thetas) = view.lonlat_ticks()
    if orientation == "vehicle":
        xlabels = ["rear", "left", "front", "right", "rear"]
        ylabels = ["up", "45°", "horizon", "135°"]
    else:
        xlabels = [f"φ={p:.0f}°" for p in phis]
        ylabels = ["θ=0 (axis)", "45°", "90°", "135°"]
    # θ = 180° is the bottom point, where its label would collide with the φ labels
    ax.set_xticks(cols, xlabels, fontsize=7)
    ax.set_yticks(rows[:-1], ylabels, fontsize=7)
    ax.tick_params(length=0, pad=1)
    for spine in ax.spines.values():
        spine.set_visible(False)


def _panel_mollweide(ax, view, nside, faces, colors, seen, title, orientation, legend=()):
    """A map over `faces` (colors (N, 3) in [0, 1] where `seen`) on the whole sphere, with the faces
    outlined and numbered."""
    from matplotlib.patches import Patch

    local, face = views.lookup(view, nside, faces)
    ax.imshow(views.paint(local, colors, seen, UNSEEN, UNUSED))
    ax.imshow(views.face_overlay(face, FACE_COLORS, width=_line_width(view.width, 250)))
    for f, (col, row) in enumerate(views.face_label_positions(view)):
        _face_label(ax, col, row, f, f in faces, 10)
    _mollweide_axes(ax, view, orientation)
    ax.set_title(title, fontsize=10)
    handles = list(legend) + [Patch(facecolor=UNSEEN, edgecolor=SWATCH_EDGE, linewidth=0.8, label="not seen"),
                              Patch(facecolor=UNUSED, edgecolor=SWATCH_EDGE, linewidth=0.8,
                                    label="face not projected")]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.06), fontsize=7.5,
              ncol=min(len(handles), 6), frameon=False, handlelength=1.2, columnspacing=1.0)


def _panel_orthographic(ax, camera, orientation, nside, faces, colors, seen):
    """The projected sphere seen from its centre along the optical axis: hemisphere θ ≤ 90°."""
    from matplotlib.patches import Circle

    to_camera = sphere_to_camera(camera, orientation)
    view = views.OrthographicView(to_camera, ORTHO_SIZE)
    local, face = views.lookup(view, nside, faces)
    ax.imshow(views.paint(local, colors, seen, UNSEEN, UNUSED))
    ax.imshow(views.face_overlay(face, FACE_COLORS, width=_line_width(view.width, 160)))
    col, row, front = view.to_raster(views.face_centres())
    for f in np.nonzero(front)[0]:
        _face_label(ax, col[f], row[f], int(f), f in faces)
    ax.add_patch(Circle((view.width / 2 - 0.5, view.height / 2 - 0.5), view.width / 2, fill=False,
                        lw=0.8, ec="black"))
    ax.set_title("sphere seen along the optical axis (orthographic, incidence ≤ 90°)\n"
                 "right = image right, down = image down", fontsize=10)
    ax.set_axis_off()


def _panel_backprojection(ax, recon: np.ndarray, nside: int):
    rgb = np.where(np.isfinite(recon), recon / 255.0, np.asarray(UNUSED)[:, None, None])
    ax.imshow(np.clip(rgb.transpose(1, 2, 0), 0, 1))
    ax.set_title(f"sphere back-projected into the fisheye (bilinear, nside {nside})\n"
                 "dark: outside the projected faces", fontsize=10)
    ax.set_axis_off()


def _panel_error(fig, ax, err: np.ndarray, covered: np.ndarray, mae: float):
    import matplotlib as mpl

    shown = np.where(covered, err, np.nan)
    vmax = max(1.0, float(np.nanpercentile(shown, 99))) if covered.any() else 1.0
    cmap = mpl.colormaps["inferno"].with_extremes(bad=UNSEEN)
    im = ax.imshow(shown, cmap=cmap, vmin=0, vmax=vmax)
    bar = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, extend="max")
    bar.set_label("|back-projected − input| (grey levels, mean of R,G,B)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    ax.set_title(f"absolute difference: mean {mae:.2f} grey levels over the covered pixels\n"
                 "grey: outside the projected faces", fontsize=10)
    ax.set_axis_off()


def _panel_text(ax, text: str, title: str):
    ax.text(0.0, 1.0, text, va="top", ha="left", family="monospace", fontsize=8, wrap=True,
            transform=ax.transAxes)
    ax.set_title(title, fontsize=10)
    ax.set_axis_off()


def _class_legend(labels: np.ndarray):
    from matplotlib.patches import Patch

    present = np.unique(labels[(labels >= 0) & (labels < len(WOODSCAPE_CLASSES))])
    return [Patch(facecolor=WOODSCAPE_COLORS[c] / 255.0, edgecolor=SWATCH_EDGE, linewidth=0.8,
                  label=WOODSCAPE_CLASSES[c]) for c in present]


def _label_colors(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N,) class ids -> colours (N, 3) in [0, 1] and the mask of labelled pixels."""
    return colorize(labels).astype(np.float32) / 255.0, (labels >= 0) & (labels < len(WOODSCAPE_CLASSES))


def _new_figure(figsize=FIGSIZE):
    from matplotlib.figure import Figure

    # A bare Figure (no pyplot): no global state, no GUI backend needed to save it.
    return Figure(figsize=figsize, dpi=DPI, layout="constrained")


def _save(fig, out) -> None:
    if isinstance(out, (str, Path)):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)


def _wrap_report(report: dict) -> str:
    """The report in lines short enough for a third of the figure."""
    lines = []
    for line in format_coverage(report).splitlines():
        while len(line) > 62:
            cut = line.rfind(" ", 8, 62)
            if cut < 0:
                break
            lines.append(line[:cut])
            line = "    " + line[cut + 1:]
        lines.append(line)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# one camera
# --------------------------------------------------------------------------------------------------


def render_preview(camera, image, labels=None, *, nside: int = 256, base_pixels=None,
                   orientation: str = "camera", grid_nside: int = 8, out, faces=None) -> dict:
    """Draw the preview figure of one camera into `out` (a path or a binary file object).

    image: (H, W, 3) RGB (or (H, W) grey), H×W = the camera's size; labels: (H, W) integer class
    ids or None. Returns `coverage_report(...)` plus mean_abs_error (grey levels, over the image
    pixels inside the faces, of the bilinear back-projection of the projected image).
    """
    faces = grid.base_pixels_keyword(base_pixels, faces, "render_preview")
    faces = grid.check_base_pixels(range(8) if faces is None else faces)
    nside = grid.check_nside(nside)
    grid_nside = min(grid.check_nside(grid_nside, "grid_nside"), nside)
    image = _as_rgb(image, camera)
    report = coverage_report(camera, nside, faces, orientation)

    proj = FisheyeToHealpix(camera, nside, faces, orientation)
    values = proj.project_image(image)  # (3, N)
    back = HealpixToFisheye(camera, nside, faces, orientation, interpolation="bilinear")
    recon = back.backproject(values)  # (3, H, W), NaN outside the faces
    err = np.abs(recon - image.transpose(2, 0, 1)).mean(axis=0)
    covered = back.covered_mask & np.isfinite(err)
    report["mean_abs_error"] = float(err[covered].mean()) if covered.any() else float("nan")

    fig = _new_figure()
    axes = fig.subplots(2, 3)
    face_text = grid.format_base_pixels(faces)
    fig.suptitle(f"{camera.name or 'camera'}: fisheye → HEALPix, nside {nside}, faces {face_text}, "
                 f"{orientation} orientation", fontsize=14, fontweight="bold")
    _panel_fisheye(axes[0, 0], camera, image, faces, orientation, grid_nside,
                   f"fisheye {camera.width}×{camera.height} with the HEALPix faces (numbered)\n"
                   f"thin: nside-{grid_nside} pixels; darkened: not in faces {face_text}")
    colors = np.clip(values.T / 255.0, 0, 1)
    view = views.MollweideView(MOLLWEIDE_WIDTH)
    _panel_mollweide(axes[0, 1], view, nside, faces, colors, proj.valid_mask,
                     f"projected sphere (Mollweide): {report['sphere_seen']:.1%} of faces {face_text} "
                     f"see the image", orientation)
    _panel_orthographic(axes[0, 2], camera, orientation, nside, faces, colors, proj.valid_mask)
    if labels is not None:
        projected = proj.project_labels(np.asarray(labels))
        lcolors, labelled = _label_colors(projected)
        _panel_mollweide(axes[1, 0], view, nside, faces, lcolors, labelled,
                         "labels on the sphere (nearest)", orientation, _class_legend(projected))
        fig.supxlabel(format_coverage(report), fontsize=8.5, family="monospace", multialignment="left")
    else:
        _panel_text(axes[1, 0], _wrap_report(report), "coverage")
    _panel_backprojection(axes[1, 1], recon, nside)
    _panel_error(fig, axes[1, 2], err, covered, report["mean_abs_error"])
    _save(fig, out)
    return report


# --------------------------------------------------------------------------------------------------
# a rig on one sphere
# --------------------------------------------------------------------------------------------------


@dataclass
class RigFusion:
    """Several cameras on one sphere (vehicle frame), N = len(base_pixels)·nside², NESTED.

    names: camera names; which: int64 (N,) index into names of the camera each sphere pixel is
    taken from (−1: none sees it); valid: bool (K, N) per camera; image: float32 (3, N);
    labels: int64 (N,) (ignore_index where unseen or unlabelled) or None.
    """

    names: tuple[str, ...]
    nside: int
    base_pixels: tuple[int, ...]
    which: np.ndarray
    valid: np.ndarray
    image: np.ndarray
    labels: np.ndarray | None = None

    @property
    def faces(self) -> tuple[int, ...]:
        """Deprecated name of `base_pixels`."""
        return self.base_pixels


def fuse_rig(cameras: dict, images: dict, labels: dict | None = None, *, nside: int = 256,
             base_pixels=None, ignore_index: int = 255, faces=None) -> RigFusion:
    """Project every camera in the vehicle frame and give each sphere pixel to the camera that sees
    it at the smallest incidence angle (`projection.RigToHealpix`).

    cameras, images, labels: dicts keyed by camera name (labels may lack cameras or be None).
    """
    faces = grid.base_pixels_keyword(base_pixels, faces, "fuse_rig")
    rig = RigToHealpix(cameras, nside, range(12) if faces is None else faces, ignore_index=ignore_index)
    image = rig.project_images({n: _as_rgb(images[n], cameras[n], f"image {n}") for n in rig.names})
    fused_labels = None
    if labels:
        # A camera without a label file contributes "unlabelled" pixels.
        per_camera = {n: np.asarray(labels[n]) if labels.get(n) is not None else
                      np.full((cameras[n].height, cameras[n].width), ignore_index, dtype=np.int64)
                      for n in rig.names}
        fused_labels = rig.project_labels(per_camera)
    valid = np.stack([p.valid_mask for p in rig.projectors])
    return RigFusion(tuple(rig.names), rig.nside, rig.base_pixels, rig.source, valid, image, fused_labels)


def _rig_stats(fusion: RigFusion) -> dict:
    return {
        "nside": fusion.nside,
        "faces": fusion.base_pixels,
        "per_camera": {n: float(fusion.valid[k].mean()) for k, n in enumerate(fusion.names)},
        "chosen": {n: float((fusion.which == k).mean()) for k, n in enumerate(fusion.names)},
        "total": float((fusion.which >= 0).mean()),
    }


def format_rig(stats: dict) -> str:
    faces = grid.format_base_pixels(stats["faces"])
    lines = [f"rig on one sphere (vehicle frame), nside {stats['nside']}, faces {faces}",
             "  camera   sees     taken from it"]
    for name, seen in stats["per_camera"].items():
        lines.append(f"  {name:<8} {seen:6.1%}   {stats['chosen'][name]:6.1%}")
    lines.append(f"  all      {stats['total']:6.1%}")
    return "\n".join(lines)


def render_rig(cameras: dict, images: dict, labels: dict | None = None, *, nside: int = 256,
               base_pixels=None, title: str = "rig", out, faces=None) -> dict:
    """Draw the cameras of a rig on one sphere (vehicle frame) into `out`; returns the coverage:
    per_camera (fraction of the sphere's pixels each camera sees), chosen (fraction taken from
    each), total (fraction seen by any), nside and faces."""
    from matplotlib.patches import Patch

    if len(cameras) > len(CAMERA_COLORS):
        raise ValueError(f"render_rig draws at most {len(CAMERA_COLORS)} cameras, got {len(cameras)}")
    fusion = fuse_rig(cameras, images, labels, nside=nside,
                      base_pixels=grid.base_pixels_keyword(base_pixels, faces, "render_rig"))
    stats = _rig_stats(fusion)
    faces = fusion.base_pixels
    face_text = grid.format_base_pixels(faces)

    fig = _new_figure(RIG_FIGSIZE)
    k = len(fusion.names)
    rows = fig.add_gridspec(2, 1, height_ratios=[1.0, 1.15])
    top, bottom = rows[0].subgridspec(1, k), rows[1].subgridspec(1, 3)
    for i, name in enumerate(fusion.names):
        ax = fig.add_subplot(top[0, i])
        cam = cameras[name]
        _panel_fisheye(ax, cam, _as_rgb(images[name], cam, f"image {name}"), faces, "vehicle", 1,
                       f"{name}: sees {stats['per_camera'][name]:.1%} of the sphere", show_grid=False)
    bottom = [fig.add_subplot(bottom[0, j]) for j in range(3)]
    fig.suptitle(f"{title}: {k} cameras on one HEALPix sphere (vehicle frame), nside {nside}, "
                 f"faces {face_text}", fontsize=14, fontweight="bold")
    view = views.MollweideView(MOLLWEIDE_WIDTH)
    seen = fusion.which >= 0
    _panel_mollweide(bottom[0], view, fusion.nside, faces, np.clip(fusion.image.T / 255.0, 0, 1), seen,
                     f"fused sphere: {stats['total']:.1%} seen (each pixel from the camera nearest its axis)",
                     "vehicle")
    legend = [Patch(facecolor=CAMERA_COLORS[i], edgecolor=SWATCH_EDGE, linewidth=0.8,
                    label=f"{n} {stats['chosen'][n]:.0%}")
              for i, n in enumerate(fusion.names)]
    _panel_mollweide(bottom[1], view, fusion.nside, faces, CAMERA_COLORS[np.maximum(fusion.which, 0)], seen,
                     "which camera each sphere pixel comes from", "vehicle", legend)
    if fusion.labels is not None:
        lcolors, labelled = _label_colors(fusion.labels)
        _panel_mollweide(bottom[2], view, fusion.nside, faces, lcolors, labelled, "fused labels",
                         "vehicle", _class_legend(fusion.labels))
    else:
        _panel_text(bottom[2], format_rig(stats), "coverage (no label files)")
    _save(fig, out)
    return stats


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------


class InputError(Exception):
    """A bad input file or option; main prints it and returns 2."""


def _nside_arg(text: str) -> int:
    try:
        return grid.check_nside(int(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None


def _faces_arg(text: str) -> tuple[int, ...]:
    try:
        return grid.parse_base_pixels(text, "--base-pixels")
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid face list ({e})") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", type=Path, help="fisheye image (PNG/JPEG)")
    source.add_argument("--rig", metavar="FRAME_ID", help="WoodScape frame id, e.g. 00000 (needs --root)")
    parser.add_argument("--calibration", type=Path, help="WoodScape calibration JSON of --image")
    parser.add_argument("--labels", type=Path, help="class-id PNG (single channel) of --image")
    parser.add_argument("--root", type=Path, help="WoodScape tree holding rgb_images/, calibration/, ...")
    parser.add_argument("--cameras", default="FV,RV,MVL,MVR", help="cameras of --rig (default FV,RV,MVL,MVR)")
    parser.add_argument("--out", type=Path, required=True, help="output figure (PNG)")
    parser.add_argument("--nside", type=_nside_arg, default=256, help="HEALPix nside (default 256)")
    parser.add_argument("--base-pixels", "--faces", dest="faces", type=_faces_arg, default=None,
                        help="base pixels: '0-7', '0,2,5', 'all' (default 0-7; all for --rig); --faces is its "
                             "older name")
    parser.add_argument("--orientation", choices=ORIENTATIONS, default=None,
                        help="sphere frame: camera (optical axis = north pole, default) or vehicle")
    parser.add_argument("--grid-nside", type=_nside_arg, default=8,
                        help="nside of the thin grid drawn on the fisheye (default 8)")
    return parser


def _read(reader, path: Path, what: str) -> np.ndarray:
    from ..data.woodscape import DatasetError

    if not path.is_file():
        raise InputError(f"{path}: no such {what} file")
    try:
        return reader(path)
    except DatasetError as e:
        raise InputError(str(e)) from None


def _read_image(path: Path) -> np.ndarray:
    from ..data.woodscape import read_image

    return _read(read_image, path, "image")


def _read_labels(path: Path) -> np.ndarray:
    from ..data.woodscape import read_labels

    return _read(read_labels, path, "label")


def _load_camera(path: Path):
    try:
        return load_calibration(path)
    except CalibrationError as e:
        raise InputError(str(e)) from None


def _check_size(array: np.ndarray, path: Path, camera, calibration: Path) -> None:
    h, w = array.shape[:2]
    if (h, w) != (camera.height, camera.width):
        raise InputError(f"{path}: image is {w}×{h} but {calibration} is for "
                         f"{camera.width}×{camera.height}")


def _load_single(args):
    if args.calibration is None:
        raise InputError("--image needs --calibration")
    if args.root is not None:
        raise InputError("--root belongs to --rig")
    camera = _load_camera(args.calibration)
    image = _read_image(args.image)
    _check_size(image, args.image, camera, args.calibration)
    labels = None
    if args.labels is not None:
        labels = _read_labels(args.labels)
        _check_size(labels, args.labels, camera, args.calibration)
    return camera, image, labels


def _load_rig(args):
    from ..data.woodscape import find_frame_files

    if args.root is None:
        raise InputError("--rig needs --root (the WoodScape tree)")
    for option in ("calibration", "labels"):
        if getattr(args, option) is not None:
            raise InputError(f"--{option} belongs to --image; --rig finds the files under --root")
    if args.orientation == "camera":
        raise InputError("--rig always uses the vehicle orientation (one sphere for all cameras)")
    names = tuple(c.strip() for c in args.cameras.split(",") if c.strip())
    try:
        files = find_frame_files(args.root, args.rig, names)
    except (FileNotFoundError, ValueError) as e:
        raise InputError(str(e)) from None
    cameras, images, labels = {}, {}, {}
    for name, f in files.items():
        cameras[name] = _load_camera(f.calibration)
        images[name] = _read_image(f.image)
        _check_size(images[name], f.image, cameras[name], f.calibration)
        if f.labels is not None:
            labels[name] = _read_labels(f.labels)
            _check_size(labels[name], f.labels, cameras[name], f.calibration)
    return cameras, images, labels


def _check_out(out: Path) -> None:
    if out.is_dir():
        raise InputError(f"--out {out} is a directory; give a file name such as {out / 'preview.png'}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"--out {out}: cannot create its folder ({e.strerror or e})") from None


def main(argv=None) -> int:
    import matplotlib

    matplotlib.use("Agg")  # headless: never open a window, whatever the environment says
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2, already printed by argparse)
        return e.code if isinstance(e.code, int) else 2
    try:
        _check_out(args.out)
        if args.rig is not None:
            cameras, images, labels = _load_rig(args)
        else:
            camera, image, labels = _load_single(args)
    except InputError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    if args.rig is not None:
        from ..data.woodscape import frame_stem

        faces = args.faces or tuple(range(12))
        stats = render_rig(cameras, images, labels or None, nside=args.nside, base_pixels=faces,
                           title=f"frame {frame_stem(args.rig)}", out=args.out)
        print(format_rig(stats))
    else:
        faces = args.faces or tuple(range(8))
        report = render_preview(camera, image, labels, nside=args.nside, base_pixels=faces,
                                orientation=args.orientation or "camera", grid_nside=args.grid_nside,
                                out=args.out)
        print(format_coverage(report))
        print(f"  back-projection error: {report['mean_abs_error']:.2f} grey levels (mean, covered pixels)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
