"""The planar CNN (`heal_swin.models.planar_cnn`): the sphere's padding (circular in φ, zeros in θ),
exact equivariance to rolls along φ, the parameter ladder against the gauge CNN, the model on a
HEALPix sphere through the equirectangular adapter, and construction errors."""

import pytest
import torch
import torch.nn.functional as F

from heal_swin import models
from heal_swin.models.planar_cnn import SphereConv2d, pad_sphere

LADDER = {"planar_cnn_1x": 1, "planar_cnn_4x": 4, "planar_cnn_20x": 20}


def _count(model):
    return sum(p.numel() for p in model.parameters())


def test_padding_wraps_phi_and_zeros_theta():
    x = torch.arange(2 * 3 * 4, dtype=torch.float64).view(1, 2, 3, 4)
    p = pad_sphere(x, 1)
    assert p.shape == (1, 2, 5, 6)
    assert (p[:, :, 0] == 0).all() and (p[:, :, -1] == 0).all()  # beyond the poles
    torch.testing.assert_close(p[:, :, 1:-1, 1:-1], x)
    torch.testing.assert_close(p[:, :, 1:-1, 0], x[..., -1])  # column W−1 left of column 0
    torch.testing.assert_close(p[:, :, 1:-1, -1], x[..., 0])
    # the convolution equals one on an image three times as wide (φ repeated), cut back to the middle,
    # with zero padding along θ only
    conv = SphereConv2d(2, 3).double()
    tiled = torch.cat([x, x, x], dim=-1)
    ref = F.conv2d(tiled, conv.weight, padding=(1, 1))[..., 4:8]
    torch.testing.assert_close(conv(x), ref)


@pytest.mark.parametrize("m", [1, 3])
def test_a_roll_along_phi_commutes_with_the_network(m):
    """Every padding is periodic along W and every stride divides k = 2^(stages−1)·m: rolling the
    input by k columns rolls the output by k (float64, to rounding), in every stage map too; a roll by
    one column does not commute (the strides see the phase), so the test can fail."""
    torch.manual_seed(0)
    model = models.create_model("planar_cnn_1x", in_chans=2, num_classes=3, img_size=(16, 32),
                                widths=(4, 8, 8)).double().eval()
    for p in model.parameters():  # GroupNorm starts at weight 1, bias 0: make every parameter count
        p.data.add_(0.1 * torch.randn_like(p))
    k = (1 << (len(model.widths) - 1)) * m
    x = torch.randn(2, 2, 16, 32, dtype=torch.float64)
    with torch.no_grad():
        out, rolled = model(x), model(x.roll(k, dims=-1))
        torch.testing.assert_close(rolled, out.roll(k, dims=-1), rtol=1e-12, atol=1e-12)
        for i, (a, b) in enumerate(zip(model.forward_features(x), model.forward_features(x.roll(k, dims=-1)))):
            torch.testing.assert_close(b, a.roll(k >> i, dims=-1), rtol=1e-12, atol=1e-12)
        off = model(x.roll(1, dims=-1))
    assert (off - out.roll(1, dims=-1)).abs().max() > 1e-3


def test_zero_padding_along_theta_is_not_periodic():
    """A roll along θ (rows) does not commute: the poles are edges, not a seam."""
    torch.manual_seed(0)
    model = models.create_model("planar_cnn_1x", in_chans=1, num_classes=3, img_size=(16, 32),
                                widths=(4, 8, 8)).double().eval()
    x = torch.randn(1, 1, 16, 32, dtype=torch.float64)
    with torch.no_grad():
        diff = model(x.roll(4, dims=-2)) - model(x).roll(4, dims=-2)
    assert diff.abs().max() > 1e-3


@pytest.mark.parametrize("name", sorted(LADDER))
def test_the_ladder_of_parameter_counts(name):
    """About 1×, 4× and 20× gauge_cnn_tiny's parameters on the digits (in_chans=1, 11 classes),
    within ±15 %, at the same depth."""
    gauge = _count(models.create_model("gauge_cnn_tiny", nside=16, base_pixels=range(12), in_chans=1,
                                       num_classes=11))
    model = models.create_model(name, in_chans=1, num_classes=11)
    assert model.img_size == models.equirectangular_shape(16, range(12)) == (32, 96)
    ratio = _count(model) / gauge
    assert 0.85 * LADDER[name] <= ratio <= 1.15 * LADDER[name], (name, _count(model), gauge, ratio)
    assert model.depths == models.create_model("planar_cnn_1x").depths
    info = models.model_info(name)
    assert info.family == "planar_cnn" and info.domain == "flat"


def test_forward_backward_on_the_sphere_through_the_adapter():
    torch.manual_seed(0)
    nside, faces = 8, range(12)
    net = models.create_model("planar_cnn_1x", in_chans=1, num_classes=11,
                              img_size=models.equirectangular_shape(nside, faces))
    model = models.EquirectangularAdapter(net, nside, faces)
    x = torch.randn(2, 1, 12 * nside ** 2, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 11, 12 * nside ** 2)
    out.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for n, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, n


def test_repr_and_feature_info_document_the_geometry():
    model = models.create_model("planar_cnn_4x", in_chans=1, num_classes=11)
    text = repr(model)
    assert "img_size=(32, 96)" in text and "widths=(24, 48, 80), depths=(1, 1, 1), norm=group" in text
    assert "pad=(zeros θ, circular φ)" in text and "resolution=(8, 24), channels=80" in text
    assert [(f["num_chs"], f["resolution"], f["reduction"]) for f in model.feature_info] == \
        [(24, (32, 96), 1), (48, (16, 48), 2), (80, (8, 24), 4)]


def test_without_normalisation_the_convolutions_carry_biases():
    model = models.create_model("planar_cnn_1x", norm=False, **models.model_info("planar_cnn_1x").test_kwargs)
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in model.modules())
    assert all(m.bias is not None for m in model.modules() if isinstance(m, SphereConv2d))
    assert "norm=none" in repr(model)
    x = torch.randn(1, 3, 16, 32)
    assert model(x).shape == (1, 10, 16, 32)


@pytest.mark.parametrize("kwargs, message", [
    (dict(img_size=(30, 96)), r"img_size=\(30, 96\) must be divisible by 2\^\(stages−1\) = 4 "
                              r"\(stage i works at img_size / 2\^i, 3 stages\)"),
    (dict(img_size=(32, 90), widths=(8, 8, 8, 8), depths=(1, 1, 1, 1)),
     r"img_size=\(32, 90\) must be divisible by 2\^\(stages−1\) = 8"),
    (dict(img_size=(32, 0)), r"img_size=\(32, 0\) must be a positive integer or a pair"),
    (dict(widths=(8, 16), depths=(1, 1, 1)), r"widths=\(8, 16\) and depths=\(1, 1, 1\) must be non-empty, "
                                             r"of equal length"),
])
def test_bad_geometry_fails_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        models.create_model("planar_cnn_1x", **kwargs)


def test_wrong_input_shape_names_expected_and_actual():
    model = models.create_model("planar_cnn_1x", in_chans=1)
    with pytest.raises(ValueError, match=r"expected x of shape \(B, 1, 32, 96\), got \(1, 1, 32, 64\)"):
        model(torch.randn(1, 1, 32, 64))
