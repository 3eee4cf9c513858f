"""Dice and IoU of segmentation label maps (diffu.metrics, chapter §6): exact values on hand-made maps, the empty-class
convention (NaN), class scores through argmax, and errors that name the argument."""

import pytest
import torch

from diffu.metrics import dice, iou

# one 3 × 4 image, classes 0–3
TARGET = torch.tensor([[[0, 1, 1, 0], [0, 1, 1, 2], [2, 2, 0, 0]]])
PRED = torch.tensor([[[0, 1, 0, 0], [1, 1, 1, 2], [2, 0, 0, 2]]])
# class 1: |T| = 4, |P| = 4, |P ∩ T| = 3 → Dice 6/8, IoU 3/5
# class 2: |T| = 3, |P| = 3, |P ∩ T| = 2 → Dice 4/6, IoU 2/4
# class 3: in neither → NaN; class 0: |T| = 5, |P| = 5, |P ∩ T| = 3 → Dice 6/10, IoU 3/7


def test_hand_computed_values():
    d = dice(PRED, TARGET, 4)
    j = iou(PRED, TARGET, 4)
    assert d.shape == j.shape == (1, 3) and d.dtype == torch.float32
    assert torch.allclose(d[0, :2], torch.tensor([6 / 8, 4 / 6])) and bool(d[0, 2].isnan())
    assert torch.allclose(j[0, :2], torch.tensor([3 / 5, 2 / 4])) and bool(j[0, 2].isnan())
    d0 = dice(PRED, TARGET, 4, ignore_background=False)
    assert d0.shape == (1, 4) and torch.allclose(d0[0, :3], torch.tensor([6 / 10, 6 / 8, 4 / 6]))
    assert torch.allclose(iou(PRED, TARGET, 4, ignore_background=False)[0, 0], torch.tensor(3 / 7))
    # the mean over the classes present skips the NaN
    assert torch.allclose(d.nanmean(1), torch.tensor([(6 / 8 + 4 / 6) / 2]))


def test_empty_class_conventions():
    t = torch.zeros(1, 2, 2, dtype=torch.long)
    assert bool(dice(t, t, 2).isnan().all()) and bool(iou(t, t, 2).isnan().all())  # absent from both: NaN
    p = t.clone()
    p[0, 0, 0] = 1
    assert dice(p, t, 2).item() == 0.0 and iou(p, t, 2).item() == 0.0  # predicted, absent from the target: 0
    assert dice(t, p, 2).item() == 0.0  # present, not predicted: 0
    assert dice(p, p, 2).item() == 1.0 and iou(p, p, 2).item() == 1.0


def test_per_image_rows_and_iou_is_a_function_of_dice():
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 4, (6, 16, 16), generator=g)
    p = torch.where(torch.rand(6, 16, 16, generator=g) < 0.3, torch.randint(0, 4, (6, 16, 16), generator=g), t)
    d, j = dice(p, t, 4), iou(p, t, 4)
    assert d.shape == (6, 3) and bool((d > 0).all() & (d < 1).all())
    assert torch.allclose(j, d / (2 - d), atol=1e-6)
    assert bool((j <= d).all())
    assert torch.allclose(dice(p[2:3], t[2:3], 4), d[2:3])  # each row is its image alone


def test_scores_are_read_through_argmax():
    g = torch.Generator().manual_seed(1)
    t = torch.randint(0, 3, (2, 8, 8), generator=g)
    scores = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    assert torch.equal(dice(scores, t, 3), dice(scores.argmax(1), t, 3))
    one_hot = torch.nn.functional.one_hot(t, 3).permute(0, 3, 1, 2).float()
    assert torch.equal(iou(one_hot, t, 3), torch.ones(2, 2))  # probabilities of the truth score 1


@pytest.mark.parametrize(
    "pred, target, num_classes, kwargs, match",
    [
        (PRED, TARGET, 1, {}, "num_classes must"),
        (PRED, TARGET, 4.0, {}, "num_classes must"),
        (PRED, TARGET, 4, {"ignore_background": 1}, "ignore_background must"),
        (PRED, TARGET.float(), 4, {}, "target must be an integer"),
        (PRED, TARGET[0], 4, {}, "target must have 3 dimensions"),
        (PRED, TARGET.tolist(), 4, {}, "target must be a tensor"),
        (PRED, TARGET + 3, 4, {}, "target must hold class indices"),
        (PRED, TARGET - 1, 4, {}, "target must hold class indices"),
        (PRED.float(), TARGET, 4, {}, "pred must be an integer"),
        (PRED.bool(), TARGET, 4, {}, "pred must be an integer"),
        (PRED + 2, TARGET, 4, {}, "pred must hold class indices"),
        (PRED[:, :2], TARGET, 4, {}, "pred must have target's shape"),
        (PRED[0, 0], TARGET, 4, {}, "pred must have 3 or 4 dimensions"),
        (None, TARGET, 4, {}, "pred must be a tensor"),
        (torch.zeros(1, 3, 3, 4), TARGET, 4, {}, "pred scores must have shape"),
        (torch.zeros(1, 4, 3, 4, dtype=torch.long), TARGET, 4, {}, "pred must be a floating-point"),
        (torch.full((1, 4, 3, 4), float("nan")), TARGET, 4, {}, "pred must be finite"),
        (PRED.to("meta"), TARGET, 4, {}, "pred must be on target's device"),
    ],
)
@pytest.mark.parametrize("metric", [dice, iou])
def test_bad_inputs_are_named(metric, pred, target, num_classes, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        metric(pred, target, num_classes, **kwargs)
