"""Losses and metrics against values computed by hand."""

import math

import numpy as np
import pytest
import torch

from heal_swin.tasks import (TASK_METRICS, ConfusionMatrix, DepthLoss, DepthMetrics, SegmentationLoss,
                             from_prediction, to_target)


def test_confusion_matrix_by_hand():
    labels = torch.tensor([0, 0, 1, 1, 2, 255, 2, 1])
    pred = torch.tensor([0, 1, 1, 1, 2, 0, 0, 2])
    cm = ConfusionMatrix(3, class_names=("a", "b", "c"))
    cm.update(pred, labels)
    expected = np.array([[1, 1, 0], [0, 2, 1], [1, 0, 1]])
    np.testing.assert_array_equal(cm.counts.numpy(), expected)
    # IoU = tp / (row + col − tp): a 1/(2+2−1), b 2/(3+3−2), c 1/(2+2−1)
    np.testing.assert_allclose(cm.iou(), [1 / 3, 2 / 4, 1 / 3])
    s = cm.summary()
    assert s["miou"] == pytest.approx((1 / 3 + 0.5 + 1 / 3) / 3)
    assert s["accuracy"] == pytest.approx(4 / 7) and s["pixels"] == 7
    assert s["iou"]["b"] == pytest.approx(0.5)
    # A validity mask removes pixels; merging adds counts; absent classes are NaN, not 0.
    masked = ConfusionMatrix(4)
    masked.update(pred, labels, valid=torch.tensor([1, 1, 1, 1, 1, 1, 0, 0]).bool())
    assert masked.counts.sum() == 5 and np.isnan(masked.iou()[3])
    cm.merge(cm)
    assert cm.counts.sum() == 14


def test_segmentation_loss_ignores_and_weights():
    logits = torch.randn(2, 3, 10, requires_grad=True)
    labels = torch.randint(0, 3, (2, 10))
    labels[0, :4] = 255
    loss = SegmentationLoss(3)(logits, labels)
    keep = labels != 255
    manual = -torch.log_softmax(logits, 1).gather(1, labels.clamp(max=2)[:, None])[:, 0][keep].mean()
    assert loss.item() == pytest.approx(manual.item(), rel=1e-6)
    loss.backward()
    assert torch.all(logits.grad[0, :, :4] == 0)  # ignored pixels get no gradient
    w = torch.tensor([1.0, 2.0, 0.5])
    weighted = SegmentationLoss(3, class_weights=w)(logits.detach(), labels)
    lw = w[labels.clamp(max=2)][keep]
    nll = -torch.log_softmax(logits.detach(), 1).gather(1, labels.clamp(max=2)[:, None])[:, 0][keep]
    assert weighted.item() == pytest.approx(((lw * nll).sum() / lw.sum()).item(), rel=1e-6)
    with pytest.raises(ValueError, match="expected 3 non-negative weights"):
        SegmentationLoss(3, class_weights=[1.0, 2.0])


def test_depth_metrics_by_hand():
    d = torch.tensor([1.0, 2.0, 4.0, 10.0, float("nan")])
    p = torch.tensor([1.1, 1.0, 4.0, 20.0, 3.0])
    m = DepthMetrics()
    m.update(p, d, valid=torch.tensor([1, 1, 1, 0, 1]).bool())
    s = m.summary()
    pp, dd = np.array([1.1, 1.0, 4.0]), np.array([1.0, 2.0, 4.0])
    assert s["pixels"] == 3
    assert s["abs_rel"] == pytest.approx(np.mean(np.abs(pp - dd) / dd))
    assert s["sq_rel"] == pytest.approx(np.mean((pp - dd) ** 2 / dd))
    assert s["rmse"] == pytest.approx(math.sqrt(np.mean((pp - dd) ** 2)))
    assert s["rmse_log"] == pytest.approx(math.sqrt(np.mean((np.log(pp) - np.log(dd)) ** 2)))
    # ratios 1.1, 2.0, 1.0: 2.0 exceeds 1.25, 1.25² and 1.25³ = 1.95
    assert s["d1"] == pytest.approx(2 / 3) and s["d2"] == pytest.approx(2 / 3) and s["d3"] == pytest.approx(2 / 3)
    m2 = DepthMetrics()
    m2.update(torch.tensor([1.9]), torch.tensor([1.0]))
    assert m2.summary()["d3"] == 1.0 and m2.summary()["d2"] == 0.0
    capped = DepthMetrics(max_depth=3.0)
    capped.update(p, d)
    assert capped.summary()["pixels"] == 2


@pytest.mark.parametrize("target", ["depth", "log", "inverse"])
def test_depth_targets_round_trip(target):
    d = torch.tensor([0.5, 3.0, 80.0])
    torch.testing.assert_close(from_prediction(to_target(d, target), target), d)


def test_depth_losses():
    d = torch.tensor([[1.0, 2.0, 4.0, float("nan")]])
    valid = torch.tensor([[True, True, True, True]])
    pred = torch.log(torch.tensor([[2.0, 2.0, 2.0, 1.0]]))
    l1 = DepthLoss("l1", "log")(pred, d, valid)
    assert l1.item() == pytest.approx(np.mean(np.abs(np.log([2, 2, 2]) - np.log([1, 2, 4]))), rel=1e-6)
    l2 = DepthLoss("l2", "log")(pred, d, valid)
    assert l2.item() == pytest.approx(np.mean((np.log([2, 2, 2]) - np.log([1, 2, 4])) ** 2), rel=1e-6)
    # Scale-invariant log: a global scale error costs nothing when lambda = 1.
    scaled = torch.log(torch.tensor([[3.0, 6.0, 12.0, 1.0]]))
    assert DepthLoss("silog", "log", silog_lambda=1.0)(scaled, d, valid).item() < 1e-5
    empty = DepthLoss()(pred.requires_grad_(), d, torch.zeros_like(valid))
    empty.backward()
    assert empty.item() == 0.0
    with pytest.raises(ValueError, match="depth loss='huber'"):
        DepthLoss("huber")


def test_task_metrics_are_the_scalar_figures_of_each_summary():
    """train.metric is checked against TASK_METRICS: it must list exactly what evaluation reports."""
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 1]))
    dm = DepthMetrics()
    dm.update(torch.tensor([1.0, 2.0]), torch.tensor([1.1, 2.5]))
    for task, summary in (("segmentation", cm.summary()), ("depth", dm.summary())):
        scalars = {k for k, v in summary.items() if isinstance(v, float)}
        assert set(TASK_METRICS[task]) == scalars, task
        assert set(TASK_METRICS[task].values()) <= {"max", "min"}
    assert TASK_METRICS["segmentation"]["miou"] == "max" and TASK_METRICS["depth"]["abs_rel"] == "min"
