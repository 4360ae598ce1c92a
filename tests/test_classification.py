"""Classification, the invariant task (issue #26): one digit per sphere, a head that pools over the sphere,
accuracy per class, the one trainer, export; the class scores of the equivariant models are invariant to the
grid's symmetries to float64 rounding, the chart CNN's are not."""

import json
import math
from pathlib import Path

import pytest
import torch

from heal_swin import models
from heal_swin.data import digits
from heal_swin.engine import ConfigError, load_config, trainer
from heal_swin.engine.evaluation import evaluate_run, load_model
from heal_swin.equivariance import flip, rotation_permutation, rz
from heal_swin.tasks import TASK_METRICS, ClassificationLoss, ClassificationMetrics

ROOT = Path(__file__).resolve().parents[1]
SPHERE = tuple(range(12))


# --------------------------------------------------------------------------- metrics and loss


def test_metrics_accuracy_balanced_and_per_class():
    m = ClassificationMetrics(3, class_names=("a", "b", "c"))
    m.update(torch.tensor([0, 0, 1, 1, 0]), torch.tensor([0, 0, 0, 1, 1]))
    s = m.summary()
    assert s["samples"] == 5 and s["accuracy"] == pytest.approx(3 / 5)
    assert s["per_class_accuracy"] == {"a": pytest.approx(2 / 3), "b": pytest.approx(1 / 2), "c": None}
    assert s["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)      # class c is absent: not averaged
    assert set(TASK_METRICS["classification"]) <= set(s)


def test_loss_is_cross_entropy_per_sample_and_checks_shapes():
    logits, labels = torch.randn(4, 10), torch.tensor([1, 2, 3, 4])
    loss = ClassificationLoss(10)
    assert loss(logits, labels).item() == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item())
    with pytest.raises(ValueError, match=r"logits \(B, K\) and labels \(B,\)"):
        loss(torch.randn(4, 10, 7), torch.zeros(4, 7, dtype=torch.long))


# --------------------------------------------------------------------------- data


def test_one_digit_per_sphere_labelled_by_its_digit():
    ds = digits.DigitsDataset("train", spheres=12, nside=8, digits=(1, 1), seed=3, task="classification")
    seg = digits.DigitsDataset("train", spheres=12, nside=8, digits=(1, 1), seed=3)
    assert ds.class_names == digits.DIGIT_NAMES and ds.task == "classification"
    for i in range(len(ds)):
        item, pixels = ds[i], seg[i]["labels"]
        assert item["labels"].shape == () and item["labels"].dtype == torch.int64
        assert set((pixels[pixels > 0] - 1).tolist()) <= {int(item["labels"])}   # the sphere's digit pixels
        torch.testing.assert_close(item["image"], seg[i]["image"])
    assert int(ds.label_counts().sum()) == len(ds) and len(ds.label_counts()) == 10
    turned = ds.rotated(0, rz(0.7))
    assert turned["labels"] == ds[0]["labels"]                                    # invariant: the same label
    with pytest.raises(ValueError, match="one digit"):
        digits.DigitsDataset("train", spheres=2, nside=8, digits=(1, 3), task="classification")
    with pytest.raises(ValueError, match="task='depth'"):
        digits.DigitsDataset("train", spheres=2, nside=8, task="depth")


# --------------------------------------------------------------------------- invariance


def _classifier(name, **kw):
    torch.manual_seed(0)
    info = models.model_info(name)
    return models.create_model(name, **{**info.test_kwargs, "nside": 8, "base_pixels": SPHERE, "in_chans": 1,
                                        "num_classes": 10, "task": "classification", **kw}).double().eval()


def _symmetries(nside):
    return {"polar turn": rz(math.pi / 2), **{f"flip {phi}°": flip(math.radians(phi)) for phi in (0, 45, 90)}}


def _invariance_errors(net, nside=8):
    x = torch.randn(2, 1, 12 * nside ** 2, dtype=torch.float64)
    with torch.no_grad():
        y = net(x)
        assert y.shape == (2, 10)
        errors = {}
        for name, matrix in _symmetries(nside).items():
            index = rotation_permutation(nside, matrix, SPHERE)
            errors[name] = ((net(x.index_select(-1, index)) - y).abs().max() / y.abs().max()).item()
    return errors


def test_gauge_cnn_class_scores_are_invariant_to_the_grid_symmetries():
    errors = _invariance_errors(_classifier("gauge_cnn_tiny", widths=(4, 8, 8)))
    assert max(errors.values()) <= 1e-12, errors


def test_s2cnn_class_scores_are_invariant_to_the_polar_turns():
    """The S2CNN pools the mean over the sphere of its SO(3) → S² output: invariant wherever that output is
    equivariant, exactly for the grid's polar turns and flips."""
    errors = _invariance_errors(_classifier("s2cnn_digits"))
    assert max(errors.values()) <= 1e-10, errors


def test_chart_cnn_class_scores_are_not_invariant_to_the_flips():
    errors = _invariance_errors(_classifier("chart_cnn_tiny", widths=(4, 8, 8)))
    assert errors["polar turn"] <= 1e-12, errors           # the charts' own symmetry (tests/test_chart_cnn.py)
    assert min(v for k, v in errors.items() if k.startswith("flip")) > 1e-3, errors


@pytest.mark.parametrize("name", models.list_models())
def test_a_classifier_is_an_encoder_whose_bottleneck_the_head_pools(name):
    """task="classification" builds no decoder: the head pools the last map of forward_features (the gauge
    CNN's after orientation pooling), every parameter gets a gradient (none idle, as DDP needs), and the
    classifier has fewer parameters than the segmenter with the same body."""
    kwargs = dict(models.model_info(name).test_kwargs, in_chans=1, num_classes=10)
    net = models.create_model(name, task="classification", **kwargs)
    dense = models.create_model(name, task="segmentation", **kwargs)
    assert not net.dense and dense.dense
    x = (torch.randn(2, 1, *net.img_size) if hasattr(net, "img_size")
         else torch.randn(2, 1, len(net.faces) * net.nside ** 2))
    features = net.forward_features(x)
    pooled = net.forward_decoder(features)
    assert pooled.shape[2:].numel() == features[-1].shape[2:].numel()       # the bottleneck's grid
    assert net.head.proj.in_features == 2 * pooled.shape[1]                  # mean and max of its channels
    out = net(x)
    assert out.shape == (2, 10)
    out.square().sum().backward()
    idle = [n for n, p in net.named_parameters() if p.grad is None]
    assert not idle, idle
    assert not any(n.startswith(("decoder.", "expand.", "decoder_norm.")) for n, _ in net.named_parameters())
    if len(features) > 1:                                                     # an encoder-decoder when dense
        assert sum(p.numel() for p in net.parameters()) < sum(p.numel() for p in dense.parameters())


def test_a_flat_classifier_on_the_sphere_passes_through_the_adapter():
    net = models.create_model("planar_cnn_1x", **models.model_info("planar_cnn_1x").test_kwargs, in_chans=1,
                              num_classes=10, task="classification")
    adapter = models.EquirectangularAdapter(net, 8, SPHERE, net.img_size)
    assert adapter(torch.randn(3, 1, 12 * 64)).shape == (3, 10)


# --------------------------------------------------------------------------- the one trainer


def _cfg(tmp_path, *extra):
    return load_config(ROOT / "configs" / "digits_classification.yaml",
                       [f"run.dir={tmp_path / 'run'}", "data.nside=8", "data.digits.train=12", "data.digits.test=6",
                        "data.batch_size=4", "train.max_steps=3", "train.eval_every=3", "run.log_every=1",
                        "run.threads=1", *extra])


def test_train_evaluate_and_export_a_classifier(tmp_path):
    result = trainer.main(_cfg(tmp_path))
    assert set(result["sphere"]) == {"accuracy", "balanced_accuracy", "samples", "per_class_accuracy"}
    assert result["sphere"]["samples"] == 6 and 0 <= result["sphere"]["accuracy"] <= 1
    assert len(result["confusion_matrix"]) == 10
    run = tmp_path / "run"
    evaluate_run(run, ["eval.split=test"])
    table = (run / "eval-test" / "metrics.md").read_text()
    assert "balanced accuracy" in table and "Per-class accuracy" in table
    assert json.loads((run / "eval-test" / "metrics.json").read_text())["sphere"]["samples"] == 6
    model = load_model(run)
    assert isinstance(model.head, models.PooledHead) and model.head.proj.out_features == 10

    from heal_swin.tools.run_export import export_run
    report = export_run(run, tmp_path / "model.onnx")
    assert report.passed and report.argmax_agreement == 1.0 and report.output_shape[-1] == 10

    from heal_swin.tools import equivariance as eq
    with pytest.raises(eq.EquivarianceError, match="task=classification.*eval_rotate=1"):
        eq.load_runs([run], "val", 2)


def test_classification_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"data.digits.digits.*one digit"):
        _cfg(tmp_path, "data.digits.digits=[1,3]")
    with pytest.raises(ConfigError, match="classification needs data.source=digits"):
        load_config(ROOT / "configs" / "demo.yaml", ["task=classification", "train.metric=accuracy"])
    with pytest.raises(ConfigError, match="train.metric"):
        _cfg(tmp_path, "train.metric=miou")


def test_pooled_head_pools_mean_and_max():
    head = models.PooledHead(3, 2, pool="meanmax")
    x = torch.randn(4, 3, 50)
    with torch.no_grad():
        head.proj.weight.zero_()
        head.proj.weight[0, 1] = 1.0          # the mean of channel 1
        head.proj.weight[1, 3 + 2] = 1.0      # the max of channel 2
        head.proj.bias.zero_()
        y = head(x)
    torch.testing.assert_close(y[:, 0], x[:, 1].mean(-1))
    torch.testing.assert_close(y[:, 1], x[:, 2].amax(-1))
    flat = models.PooledHead(3, 2, layout="flat", pool="mean")
    assert flat(torch.randn(4, 3, 5, 7)).shape == (4, 2) and flat.proj.in_features == 3
    with pytest.raises(ValueError, match="pool='sum' must be one of"):
        models.PooledHead(3, 2, pool="sum")
