"""Chart CNN (issue #26): the gauge CNN with the trivial group. It differs from the gauge CNN in its
equivariance alone: the same modules, tables and stages, one ordinary kernel where the gauge CNN
turns it four times; not equivariant to the grid symmetries where the gauge CNN is exact."""

import math

import pytest
import torch

from heal_swin import layers, models
from heal_swin.equivariance import equivariance_error, flip, grid_symmetry_errors, rotation_permutation

from equivariance import SPHERE

pytestmark = pytest.mark.usefixtures("float64")

SMALL = dict(widths=(4, 8, 8), depths=(1, 1, 1))


def _build(name, nside=8, faces=SPHERE, seed=0, **kw):
    torch.manual_seed(seed)
    return models.create_model(name, nside=nside, base_pixels=faces, in_chans=2, num_classes=3,
                               **{**SMALL, **kw}).eval()


def test_flips_gauge_exact_chart_cnn_not():
    """The control differs from the gauge CNN in equivariance alone: the 180° flips about the equatorial
    axes (through face centres and vertices) commute with the gauge CNN to float64 rounding and clearly
    not with the chart CNN, whose kernels are not mirror-symmetric."""
    nside = 8
    x = torch.randn(2, 2, 12 * nside ** 2)
    for phi in (0, 45, 90):
        index = rotation_permutation(nside, flip(math.radians(phi)), SPHERE)
        act = lambda t: t.index_select(-1, index)  # noqa: E731
        gauge = equivariance_error(_build("gauge_cnn_tiny"), act, act, x)
        chart = equivariance_error(_build("chart_cnn_tiny"), act, act, x)
        assert gauge <= 1e-12, (phi, gauge)
        assert chart > 0.1, (phi, chart)


def test_polar_turns_are_a_symmetry_of_the_charts_themselves():
    """What the chart CNN keeps: a quarter-turn about the pole carries every face's chart onto the next
    face's chart of its ring without turning it (the in-chart index stays), so ordinary kernels on the
    charts commute with it exactly, as the gauge CNN's do. The flips are what it breaks."""
    chart = grid_symmetry_errors(_build("chart_cnn_tiny"), 8, SPHERE, 2)
    gauge = grid_symmetry_errors(_build("gauge_cnn_tiny"), 8, SPHERE, 2)
    assert set(gauge) == set(chart) and max(gauge.values()) <= 1e-12, gauge
    turns = {k: v for k, v in chart.items() if k.startswith("polar turn")}
    flips = {k: v for k, v in chart.items() if k.startswith("flip")}
    assert len(turns) == 3 and max(turns.values()) <= 1e-12, chart
    assert len(flips) == 3 and min(flips.values()) > 0.1, chart


def test_same_modules_and_tables_as_the_gauge_cnn():
    """Module for module the gauge CNN's U-Net: every convolution at the same place with the same
    padding table geometry (nside, faces, radius), `ChartConv` where the gauge CNN has a lifting or
    group convolution; the same stage nsides; orientation pooling is the identity."""
    gauge, chart = _build("gauge_cnn_tiny"), _build("chart_cnn_tiny")
    g, c = (dict(m.named_modules(remove_duplicate=False)) for m in (gauge, chart))
    assert set(g) == set(c)
    for name, module in g.items():
        other = c[name]
        if isinstance(module, (layers.LiftingConv, layers.GroupConv)):
            assert isinstance(other, layers.ChartConv), name
            assert other.pad.key[2:] == module.pad.key[2:] and other.pad.field.kind == "trivial", name
            assert other.weight.shape[-2:] == module.weight.shape[-2:]
        elif isinstance(module, layers.OrientationPool):
            assert isinstance(other, torch.nn.Identity), name
        elif name:  # the root: ChartCNNUNet is a GaugeCNNUNet
            assert type(other) is type(module), name
        else:
            assert isinstance(other, models.GaugeCNNUNet) and other.group == "trivial"
    assert [f["nside"] for f in gauge.feature_info] == [f["nside"] for f in chart.feature_info]
    assert [f["num_chs"] for f in chart.feature_info] == list(SMALL["widths"])
    assert {f["field"] for f in chart.feature_info} == {"trivial"}
    assert "group=trivial" in repr(chart)


def test_chart_conv_is_the_lifting_convs_unturned_copy():
    """ChartConv with a lifting convolution's weights gives that convolution's orientation 0 (the one
    whose kernel is not turned): the same padding, the same correlation."""
    nside, faces = 8, SPHERE
    torch.manual_seed(0)
    lift = layers.LiftingConv(2, 3, nside, faces)
    chart = layers.ChartConv(2, 3, nside, faces)
    with torch.no_grad():
        chart.weight.copy_(lift.weight)
        chart.bias.copy_(lift.bias)
    x = torch.randn(2, 2, 12 * nside ** 2)
    torch.testing.assert_close(chart(x), lift(x)[:, :, 0], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="trivial"):
        chart(torch.randn(2, 2, 4, 12 * nside ** 2))


def test_the_chart_cnn_depends_on_the_gauge():
    """Turning the charts changes the function (the gauge CNN's output would only move with the pixels)."""
    nside, faces = 8, SPHERE
    turns = (1,) + (0,) * 11
    model, turned = _build("chart_cnn_tiny"), _build("chart_cnn_tiny", turns=turns)
    turned.load_state_dict(model.state_dict())
    x = torch.randn(1, 2, 12 * nside ** 2)
    act = layers.trivial(2).transform
    with torch.no_grad():
        moved = layers.trivial(3).transform(model(x), nside, faces, turns)
        err = (turned(act(x, nside, faces, turns)) - moved).abs().max() / moved.abs().max()
    assert err > 0.01, err


@pytest.mark.parametrize("control, ratio", [("chart_cnn_tiny", 1), ("chart_cnn_tiny_4x", 4), ("chart_cnn_tiny_20x", 20),
                                            ("chart_cnn_base", 1), ("chart_cnn_base_4x", 4),
                                            ("chart_cnn_base_20x", 20)])
def test_the_ladder_of_parameter_counts(control, ratio):
    """The paper's ladder against the gauge CNN each rung controls (digits: 1 input channel, 11 classes)."""
    reference = "gauge_cnn_tiny" if "tiny" in control else "gauge_cnn_base"

    def params(name):
        with torch.device("meta"):
            net = models.create_model(name, nside=16, base_pixels=SPHERE, in_chans=1, num_classes=11)
        return sum(p.numel() for p in net.parameters())

    got = params(control) / params(reference)
    assert abs(got / ratio - 1) < 0.1, (control, got)
    assert models.model_info(control).family == "chart_cnn"


def test_group_errors():
    with pytest.raises(ValueError, match="group='c8'.*'c4', 'trivial'"):
        models.create_model("gauge_cnn_tiny", nside=8, group="c8")
    with pytest.raises(ValueError, match="trivial group"):
        models.create_model("chart_cnn_tiny", nside=8, group="c4")
    with pytest.raises(ValueError, match="nside=8 is too small for 5 stages"):
        models.create_model("chart_cnn_tiny", nside=8, widths=(4,) * 5, depths=(1,) * 5)


@pytest.mark.parametrize("config", ["chart_cnn_demo", "planar_cnn_demo", "digits_chart_cnn", "digits_planar_cnn"])
def test_the_controls_train_from_their_configs(config, data_root, tmp_path):
    """The fisheye demo configs and the digits configs of both controls train through the one trainer."""
    from pathlib import Path

    from heal_swin.engine import load_config, trainer

    torch.set_default_dtype(torch.float32)
    root = Path(__file__).resolve().parents[1]
    overrides = [f"run.dir={tmp_path / 'run'}", "train.max_steps=2", "train.eval_every=2", "run.threads=1",
                 "data.nside=8", "data.batch_size=2"]
    if config.startswith("digits"):
        overrides += ["data.digits.train=4", "data.digits.test=2"]
    else:
        overrides += [f"data.root={data_root}", "data.generate=false", "data.flat_size=[32,48]",
                      "data.split_fractions=[0.5,0.5,0.0]", "eval.figures=0"]
    result = trainer.main(load_config(root / "configs" / f"{config}.yaml", overrides))
    metrics = result.get("sphere") or result.get("flat")
    assert 0 <= metrics["miou"] <= 1
