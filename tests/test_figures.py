"""What the figures show: legends a reader can see, colour bars for depth, numbered faces on the
sphere, classes told apart by colour; and progress bars that leave no escape codes in log files."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
import torch

from heal_swin import cameras
from heal_swin.data import WOODSCAPE_CLASSES, WOODSCAPE_COLORS
from heal_swin.data.progress import progress_options
from heal_swin.projection import views
from heal_swin.tools import infer, preview

from pictures import figure_size, panel_pixels, read_png

WHITE = np.array([255, 255, 255])


def _lab(rgb) -> np.ndarray:
    """sRGB 0–255 -> CIELAB (D65), the space where distance is perceived difference (ΔE 1976)."""
    c = np.asarray(rgb, dtype=np.float64) / 255
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def _delta_e(a, b) -> float:
    return float(np.linalg.norm(_lab(a) - _lab(b)))


def _rgb(color) -> np.ndarray:
    return np.round(np.asarray(color, dtype=np.float64)[:3] * 255)


# ----------------------------------------------------------------------------------- palette


def test_lane_marks_and_motorcycles_stand_out():
    """Lane marks were white (ΔE 0 from a white figure) and motorcycles a second dark blue beside
    vehicles (ΔE 40); both are now at least 50 from white and from every other class."""
    lanes, moto = WOODSCAPE_CLASSES.index("lanemarks"), WOODSCAPE_CLASSES.index("motorcycle")
    for c in (lanes, moto):
        assert _delta_e(WOODSCAPE_COLORS[c], WHITE) >= 45, WOODSCAPE_CLASSES[c]
        for other in range(len(WOODSCAPE_CLASSES)):
            if other != c:
                assert _delta_e(WOODSCAPE_COLORS[c], WOODSCAPE_COLORS[other]) >= 50, (
                    WOODSCAPE_CLASSES[c], WOODSCAPE_CLASSES[other])
    closest = min(_delta_e(WOODSCAPE_COLORS[a], WOODSCAPE_COLORS[b])
                  for a, b in itertools.combinations(range(len(WOODSCAPE_CLASSES)), 2))
    assert closest >= 30


# ----------------------------------------------------------------------------------- preview


def _small_frame():
    cam = cameras.load_calibration(cameras.FV_SAMPLE).resized(160, 121)
    vv, uu = np.meshgrid(np.arange(cam.height), np.arange(cam.width), indexing="ij")
    rays = cam.pixel_to_ray(np.stack([uu, vv], axis=-1).astype(np.float64))
    image = np.clip(np.stack([(rays[..., 0] + 1) * 110, (rays[..., 1] + 1) * 110, np.full(uu.shape, 90.0)], -1),
                    0, 255).astype(np.uint8)
    labels = np.zeros((cam.height, cam.width), dtype=np.uint8)
    labels[rays[..., 1] > 0.2] = 1
    labels[(rays[..., 1] > 0.2) & (np.abs(rays[..., 0]) < 0.1)] = 2  # lane marks
    labels[(rays[..., 1] < -0.2) & (rays[..., 0] < 0)] = 6            # vehicles
    labels[(rays[..., 1] < -0.2) & (rays[..., 0] > 0.3)] = 8          # motorcycle
    return cam, image, labels


def _legend_swatches(fig):
    out = {}
    for legend in fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]:
        for patch, text in zip(legend.get_patches(), legend.get_texts()):
            out[text.get_text()] = patch
    return out


def _assert_swatches_visible(fig, names):
    background = _rgb(fig.get_facecolor())
    swatches = _legend_swatches(fig)
    assert set(names) <= set(swatches), (names, sorted(swatches))
    for name, patch in swatches.items():
        face, edge = _rgb(patch.get_facecolor()), _rgb(patch.get_edgecolor())
        # a swatch shows when its fill or its outline differs from the paper; every one is outlined
        assert patch.get_linewidth() > 0 and _delta_e(edge, background) > 40, name
        assert _delta_e(face, background) > 20 or name in ("not seen",), name


def test_preview_legend_swatches_are_visible_on_white(tmp_path, monkeypatch):
    monkeypatch.setenv("HEAL_SWIN_CACHE", str(tmp_path / "cache"))
    figures = []
    monkeypatch.setattr(preview, "_save", lambda fig, out: figures.append(fig))
    cam, image, labels = _small_frame()
    preview.render_preview(cam, image, labels, nside=8, base_pixels=range(8), out=tmp_path / "p.png")
    (fig,) = figures
    _assert_swatches_visible(fig, ["lanemarks", "vehicles", "motorcycle", "road"])
    lanes = _legend_swatches(fig)["lanemarks"]
    assert _delta_e(_rgb(lanes.get_facecolor()), WHITE) >= 45
    texts = {t.get_text() for ax in fig.axes for t in ax.texts}
    assert {str(f) for f in range(12)} <= texts  # numbered faces on the sphere panels


def test_face_label_positions_lie_inside_the_mollweide_ellipse():
    view = views.MollweideView(400)
    pos = views.face_label_positions(view)
    assert pos.shape == (12, 2)
    cols, rows = np.round(pos).astype(int).T
    assert view.inside[np.clip(rows, 0, view.height - 1), np.clip(cols, 0, view.width - 1)].all()


def test_depth_rgb_takes_scalars_and_marks_missing_depth():
    assert views.depth_rgb(np.nan, 10.0).shape == (3,)
    grey = int(views.DEPTH_INVALID * 255)  # truncated, as depth_rgb converts
    assert (views.depth_rgb(np.array([np.nan, 1.0]), 10.0)[0] == grey).all()


# ----------------------------------------------------------------------------------- evaluation figures


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from heal_swin.data.synthetic import generate

    root = tmp_path_factory.mktemp("syn")
    generate(root, frames=2, seed=0, size=(96, 72), cameras=("FV",), progress=False, workers=1)
    return root


def _eval_figure(tiny_data, tmp_path, task):
    from heal_swin.engine.config import load_config
    from heal_swin.engine.evaluation import _figure
    from heal_swin.engine.trainer import build_datasets

    extra = ["task=depth", "train.metric=abs_rel", "train.metric_mode=min"] if task == "depth" else []
    cfg = load_config("configs/demo.yaml", [f"data.root={tiny_data}", "data.nside=4", "data.generate=false",
                                            "data.split_fractions=[0.5,0.5,0.0]"] + extra)
    dataset = build_datasets(cfg, ("val",))["val"]
    n = 8 * 4 * 4
    pred = torch.arange(n) % 10 if task == "segmentation" else torch.linspace(1.0, 30.0, n)
    return _figure(dataset, 0, pred, cfg, tmp_path / f"{task}.png")


def test_evaluation_segmentation_figure(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("HEAL_SWIN_CACHE", str(tmp_path / "cache"))
    fig = _eval_figure(tiny_data, tmp_path, "segmentation")
    _assert_swatches_visible(fig, ["lanemarks", "motorcycle", "vehicles"])
    sphere = fig.axes[3]
    assert {t.get_text() for t in sphere.texts} == {str(f) for f in range(12)}
    _assert_four_panels_drawn(fig, tmp_path / "segmentation.png")


def _assert_four_panels_drawn(fig, path):
    """The PNG is the figure (its size at its dpi): four panels side by side (fisheye, truth, prediction in
    the fisheye, on the sphere), each showing a picture (several colours) in its own part of the file."""
    image = read_png(path, size=figure_size(fig))
    panels = [ax for ax in fig.axes if not hasattr(ax, "_colorbar")]
    assert len(panels) == 4, len(panels)
    boxes = [ax.get_window_extent() for ax in panels]
    assert all(a.x1 <= b.x0 + 1 for a, b in zip(boxes, boxes[1:])), boxes      # left to right, apart
    for ax in panels:
        read = panel_pixels(image, fig, ax)
        colours = len(np.unique(read.reshape(-1, 3), axis=0))
        assert colours >= 5 and read.std() > 10, (ax.get_title(), colours, read.std())


def test_evaluation_depth_figure_has_a_colour_bar_in_metres(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("HEAL_SWIN_CACHE", str(tmp_path / "cache"))
    fig = _eval_figure(tiny_data, tmp_path, "depth")
    bars = [ax for ax in fig.axes if hasattr(ax, "_colorbar")]
    assert len(bars) == 1 and "depth (m)" in bars[0].get_xlabel()
    lo, hi = bars[0].get_xlim()
    assert lo == 0 and hi > 1
    assert {t.get_text() for t in fig.axes[3].texts} == {str(f) for f in range(12)}
    _assert_four_panels_drawn(fig, tmp_path / "depth.png")


# ----------------------------------------------------------------------------------- inference overlays


def _has_colour(strip, rgb) -> bool:
    return bool((strip == np.asarray(rgb, dtype=np.uint8)).all(axis=-1).any())


def test_inference_overlay_has_a_legend_of_the_classes_present():
    image = np.full((60, 200, 3), 120, dtype=np.uint8)
    result = np.zeros((60, 200), dtype=np.uint8)
    result[:, 50:] = 2
    result[:, 120:] = 8
    result[:10] = 255
    out = infer._overlay(image, result, "segmentation", WOODSCAPE_COLORS, WOODSCAPE_CLASSES)
    assert out.shape[1] == 200 and out.shape[0] > 60
    strip = out[60:]
    for c in (0, 2, 8):
        assert _has_colour(strip, WOODSCAPE_COLORS[c]), WOODSCAPE_CLASSES[c]
    assert not _has_colour(strip, WOODSCAPE_COLORS[6])  # only the classes present
    assert (strip < 60).all(axis=-1).sum() > 100  # the names are written (dark text on white)


def test_inference_depth_overlay_has_a_colour_bar_from_the_shared_map():
    image = np.full((50, 80, 3), 100, dtype=np.uint8)
    depth = np.linspace(1.0, 20.0, 50 * 80, dtype=np.float32).reshape(50, 80)
    depth[:5] = np.nan
    out = infer._overlay(image, depth, "depth", WOODSCAPE_COLORS)
    assert out.shape[1] == 160 and out.shape[0] > 50
    vmax = float(np.nanpercentile(depth, 95))
    np.testing.assert_array_equal(out[:50, 80:], views.depth_rgb(depth, vmax))
    bar = out[50:, 80:]
    for d in (0.0, vmax):  # the ramp's two ends: near and far
        assert _has_colour(bar, views.depth_rgb(np.float64(d), vmax)), d
    ramp = max(bar, key=lambda row: len(np.unique(row, axis=0)))
    assert len(np.unique(ramp, axis=0)) > 40


# ----------------------------------------------------------------------------------- progress bars


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_options_follow_the_stream():
    assert progress_options(stream=io.StringIO())["disable"] is True
    assert progress_options(stream=_Terminal())["disable"] is False
    assert progress_options(False, stream=_Terminal())["disable"] is True


def test_progress_in_a_log_file_leaves_no_escape_codes():
    from tqdm import tqdm

    log = io.StringIO()
    for _ in tqdm(range(50), desc="work", **progress_options(stream=log)):
        pass
    assert "\r" not in log.getvalue() and "\x1b" not in log.getvalue()
    term = _Terminal()
    for _ in tqdm(range(5), desc="work", **progress_options(stream=term)):
        pass
    assert "\r" in term.getvalue()  # a terminal still gets its live bar


def test_synthetic_generation_writes_no_bar_into_a_captured_stderr(tmp_path, capsys):
    from heal_swin.data.synthetic import generate

    generate(tmp_path, frames=1, size=(32, 24), cameras=("FV",), progress=True, workers=1)
    err = capsys.readouterr().err
    assert "\r" not in err and "synthetic frames" not in err
